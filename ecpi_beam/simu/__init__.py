"""The ECLAIRs simulator: writes ICD input triplets from a scenario (docs/simulator.md).

    scenario = load_scenario("crab.toml")          # or default_scenario(), scenario_with(...)
    truth = simulate(scenario, "input/", Caldb.open(default_caldb_dir()))
"""
from ecpi_beam.simu.scenario import (Background, Detector, Grb, Orbit, PointSource, Pointing,
                                     Scenario, antisolar_radec, default_scenario, load_scenario,
                                     scenario_from_dict, scenario_with)
from ecpi_beam.simu.simulate import Truth, simulate, triplet_paths

__all__ = ["Scenario", "Pointing", "Orbit", "PointSource", "Grb", "Background", "Detector",
           "load_scenario", "scenario_from_dict", "scenario_with", "default_scenario",
           "antisolar_radec", "simulate", "triplet_paths", "Truth"]
