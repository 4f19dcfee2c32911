"""Thin Beam PTransforms, one module per ECPI component."""
