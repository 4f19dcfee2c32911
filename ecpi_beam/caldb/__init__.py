"""Calibration database: manifest, default set, caldb_init."""
