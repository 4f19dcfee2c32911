"""CALI good time (ICD section 2): telemetry, out of the SAA, stable attitude, and all three.

Every GTI is an (n, 2) float array of sorted, disjoint [start, stop] intervals in mission
seconds (TT). All four are clipped to the observation's [TSTART, TSTOP], so that each product
extension describes the same observation span. Interval algebra is kernels/intervals.py.
"""
from __future__ import annotations

import numpy as np

from ecpi_beam.kernels import intervals

FLAG_PVT_OUTER_SAA = 0x80
FLAG_PVT_DEEP_SAA = 0x40
FLAG_ATT_STABLE = 0xAA
GTI_NAMES = ("TLM", "SAA", "ATT", "ALL")


def telemetry_gti(start, stop):
    """The event file's GTI extension (START, STOP) as sorted, merged intervals."""
    table = np.column_stack([np.asarray(start, dtype=float), np.asarray(stop, dtype=float)])
    return intervals.union(table[table[:, 1] > table[:, 0]].reshape(-1, 2))


def saa_gti(orbit_time, flag_pvt):
    """Time out of the SAA: both FLAG_PVT SAA bits (outer 0x80, deep 0x40) clear."""
    saa_bits = FLAG_PVT_OUTER_SAA | FLAG_PVT_DEEP_SAA
    out_of_saa = (np.asarray(flag_pvt).astype(np.int64) & saa_bits) == 0
    return intervals.from_boolean_samples(np.asarray(orbit_time, dtype=float), out_of_saa)


def attitude_gti(att_time, flag_att):
    """Time of stable attitude: FLAG_ATT == 0xAA (0x55 is slewing)."""
    stable = np.asarray(flag_att).astype(np.int64) == FLAG_ATT_STABLE
    return intervals.from_boolean_samples(np.asarray(att_time, dtype=float), stable)


def good_time(observation):
    """{'TLM', 'SAA', 'ATT', 'ALL'} of an observation (transforms.read.Observation or alike).

    ALL is the intersection of the three; every entry is clipped to [TSTART, TSTOP].
    """
    span = np.array([[float(observation.keywords["TSTART"]), float(observation.keywords["TSTOP"])]])
    parts = {
        "TLM": np.asarray(observation.telemetry_gti, dtype=float).reshape(-1, 2),
        "SAA": saa_gti(observation.orbit.time, observation.orbit.flag),
        "ATT": attitude_gti(observation.attitude.time, observation.attitude.flag),
    }
    clipped = {name: intervals.intersect(gti, span) for name, gti in parts.items()}
    combined = span
    for gti in clipped.values():
        combined = intervals.intersect(combined, gti)
    return {**clipped, "ALL": combined}
