"""Source names in the IAU style and matching to the known-source catalogue (ECL-SRC-CAT).

IAU recommendation for designations (IAU Specifications for Nomenclature): the coordinates in
the name are truncated, not rounded, so a name never points to a neighbouring cell of the grid.
"""
from __future__ import annotations

import math

import numpy as np

from ecpi_beam.caldb.tables import KnownSources

__all__ = ["KnownSources", "iau_name", "match_known", "angular_separation_deg"]


def iau_name(ra_deg: float, dec_deg: float, prefix: str = "ECL") -> str:
    """'<prefix> Jhhmmss.s+ddmmss' of an ICRS (J2000) position, truncated as the IAU asks."""
    ra_tenths = int(math.floor((float(ra_deg) % 360.0) / 15.0 * 36000.0 + 1e-6)) % 864000
    hours, rest = divmod(ra_tenths, 36000)
    minutes, tenths = divmod(rest, 600)
    sign = "-" if dec_deg < 0 else "+"
    dec_seconds = int(math.floor(min(abs(float(dec_deg)), 90.0) * 3600.0 + 1e-6))
    degrees, rest = divmod(dec_seconds, 3600)
    arcmin, arcsec = divmod(rest, 60)
    return (f"{prefix} J{hours:02d}{minutes:02d}{tenths // 10:02d}.{tenths % 10:d}"
            f"{sign}{degrees:02d}{arcmin:02d}{arcsec:02d}")


def _unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    ra, dec = np.radians(np.asarray(ra_deg, float)), np.radians(np.asarray(dec_deg, float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def angular_separation_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle separation (deg), broadcast; the chord form is exact at small angles."""
    chord = np.linalg.norm(_unit_vectors(ra1, dec1) - _unit_vectors(ra2, dec2), axis=-1)
    return np.degrees(2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0)))


def match_known(ra_deg, dec_deg, radius_deg, known: KnownSources) -> np.ndarray:
    """Index in `known` of the nearest known source within `radius_deg` of each position.

    `radius_deg` is a scalar or one radius per position (the 90 % error radius); -1 where no
    known source lies that close. Returns an (n,) int array.
    """
    ra = np.atleast_1d(np.asarray(ra_deg, dtype=float))
    dec = np.atleast_1d(np.asarray(dec_deg, dtype=float))
    radius = np.broadcast_to(np.asarray(radius_deg, dtype=float), ra.shape)
    matched = np.full(ra.shape, -1, dtype=int)
    if ra.size == 0 or len(known) == 0:
        return matched
    separation = angular_separation_deg(ra[:, None], dec[:, None],
                                        np.asarray(known.ra_deg, float)[None, :],
                                        np.asarray(known.dec_deg, float)[None, :])
    nearest = np.argmin(separation, axis=1)
    within = separation[np.arange(ra.size), nearest] <= radius
    matched[within] = nearest[within]
    return matched
