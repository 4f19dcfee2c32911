"""CALI event calibration (ICD sections 1 and 3): PHA -> ENERGY (keV) -> PI, bad pixels removed.

Per pixel ENERGY = GAIN[IDET, JDET] * PHA + OFFSET[IDET, JDET] from CALDB ECL-PIX-CAL, and
PI = instrument.energy_to_pi(ENERGY) (channel c covers [2.0 + 0.1 c, 2.1 + 0.1 c) keV; energies
outside 2..152 keV land in channel 0 or 1499, as the ICD's clipped scale says).

Events are dropped, and counted by reason, in this order (an event is counted once, under the
first reason that applies):
  'dead_pixel'  STATUS == 2,
  'noisy_pixel' STATUS == 1,
  'outside_gti' TIME outside the combined good time (only when a good time is given).
FLAG is copied unchanged: multiple-pixel events (bit 0) and forced triggers (bit 1) are kept, so
that later components decide what to do with them (the ECPI CALI keeps them too).
"""
from __future__ import annotations

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.caldb.tables import STATUS_DEAD, STATUS_NOISY
from ecpi_beam.io.events import CALIBRATED_DTYPE
from ecpi_beam.kernels import intervals

DROP_REASONS = ("dead_pixel", "noisy_pixel", "outside_gti")


def calibrate_events(events, pixcal, good_time=None):
    """Calibrated copy of an event chunk and the number of events dropped per reason.

    events: EVENT_DTYPE structured array; pixcal: object with (80, 80) arrays `gain`, `offset`,
    `status` indexed [IDET, JDET]; good_time: optional (n, 2) intervals (the CALI 'ALL' GTI).
    Returns (CALIBRATED_DTYPE array, {reason: count}) with every reason of DROP_REASONS present.
    """
    idet = events["IDET"].astype(np.intp)
    jdet = events["JDET"].astype(np.intp)
    status = np.asarray(pixcal.status)[idet, jdet]
    dead = status == STATUS_DEAD
    noisy = status == STATUS_NOISY
    keep = ~(dead | noisy)
    drops = {"dead_pixel": int(dead.sum()), "noisy_pixel": int(noisy.sum()), "outside_gti": 0}
    if good_time is not None:
        inside = intervals.mask_times(events["TIME"], np.asarray(good_time, dtype=float))
        drops["outside_gti"] = int((keep & ~inside).sum())
        keep &= inside

    kept = events[keep]
    idet, jdet = idet[keep], jdet[keep]
    gain, offset = np.asarray(pixcal.gain), np.asarray(pixcal.offset)
    energy = gain[idet, jdet] * kept["PHA"] + offset[idet, jdet]
    calibrated = np.empty(len(kept), dtype=CALIBRATED_DTYPE)
    for name in events.dtype.names:
        calibrated[name] = kept[name]
    calibrated["ENERGY"] = energy
    calibrated["PI"] = instrument.energy_to_pi(energy)
    return calibrated, drops
