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
from ecpi_beam.io.events import CALIBRATED_DTYPE, EVENT_DTYPE
from ecpi_beam.kernels import intervals

DROP_REASONS = ("dead_pixel", "noisy_pixel", "outside_gti")


_EVENT_BYTES = np.dtype((np.void, EVENT_DTYPE.itemsize))
_EVENT_HEAD = np.dtype({"names": ["head"], "formats": [_EVENT_BYTES], "offsets": [0],
                        "itemsize": CALIBRATED_DTYPE.itemsize})
assert all(CALIBRATED_DTYPE.fields[name] == EVENT_DTYPE.fields[name]
           for name in EVENT_DTYPE.names), "calibrated rows must start with the event columns"
_KEEP, _NOISY, _DEAD = 0, 1, 2  # drop codes per pixel, in the order of DROP_REASONS


def _pixel_tables(pixcal):
    """Flat per-pixel lookups (index IDET * 80 + JDET): drop code, gain, offset (6400 values:
    negligible next to a chunk's lookups)."""
    status = np.asarray(pixcal.status).ravel()
    code = np.full(status.shape, _KEEP, dtype=np.uint8)
    code[status == STATUS_NOISY] = _NOISY
    code[status == STATUS_DEAD] = _DEAD
    return code, np.asarray(pixcal.gain).ravel(), np.asarray(pixcal.offset).ravel()


def calibrate_events(events, pixcal, good_time=None):
    """Calibrated copy of an event chunk and the number of events dropped per reason.

    events: EVENT_DTYPE structured array; pixcal: object with (80, 80) arrays `gain`, `offset`,
    `status` indexed [IDET, JDET]; good_time: optional (n, 2) intervals (the CALI 'ALL' GTI).
    Returns (CALIBRATED_DTYPE array, {reason: count}) with every reason of DROP_REASONS present.
    """
    code_of_pixel, gain, offset = _pixel_tables(pixcal)
    pixel = events["IDET"].astype(np.intp)
    pixel *= instrument.N_PIX
    pixel += events["JDET"]
    code = code_of_pixel[pixel]
    n_noisy, n_dead = np.count_nonzero(code == _NOISY), np.count_nonzero(code == _DEAD)
    keep = code == _KEEP
    drops = {"dead_pixel": int(n_dead), "noisy_pixel": int(n_noisy), "outside_gti": 0}
    if good_time is not None:
        n_pixels_ok = int(len(code) - n_noisy - n_dead)
        keep &= intervals.mask_times(events["TIME"], np.asarray(good_time, dtype=float))
        drops["outside_gti"] = n_pixels_ok - int(np.count_nonzero(keep))

    pixel = pixel[keep]
    calibrated = np.empty(len(pixel), dtype=CALIBRATED_DTYPE)
    if events.dtype == EVENT_DTYPE:
        # the event columns lead each calibrated row at the same offsets: one raw-bytes copy
        # per row instead of one strided (unaligned) copy per column
        calibrated.view(_EVENT_HEAD)["head"] = events.view(_EVENT_BYTES)[keep]
    else:
        for name in events.dtype.names:
            calibrated[name] = events[name][keep]
    energy = gain[pixel]  # gain * PHA + offset, in place
    energy *= calibrated["PHA"]
    energy += offset[pixel]
    calibrated["ENERGY"] = energy
    calibrated["PI"] = instrument.energy_to_pi(energy)
    return calibrated, drops
