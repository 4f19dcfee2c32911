"""The ECLAIRs simulator: writes ICD input triplets from a scenario."""
