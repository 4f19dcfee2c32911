"""Assembled Beam pipelines."""
