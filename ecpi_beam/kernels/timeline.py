"""Per-observation imaging timeline: reference attitude, Earth occultation and good time per class.

ICD section 1 (Earth occultation classes): a product for occultation type T uses the time in
class T and every lower class. Sky images are made in the frame of one reference attitude, so
time when the boresight strays from it (slews, a second pointing) is left out of imaging; the
good time so left out is kept in `off_pointing_seconds`, and reported (transforms/bube.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.kernels import intervals, occultation

# Rotation from the reference attitude (boresight or roll) beyond which time is not imaged: a
# tenth of a sky pixel, so the accumulated shadowgram stays sharp.
POINTING_TOLERANCE_DEG = 0.05


@dataclass(frozen=True)
class ImagingTimeline:
    """What BUBE and IMAG need of one observation's attitude, orbit and good time."""

    reference_quaternion: np.ndarray  # (4,) scalar-last
    good_time: np.ndarray  # (n, 2): CALI good time, on the reference pointing
    class_gti: dict = field(default_factory=dict)  # occ type -> (n, 2), cumulative classes
    sample_time: np.ndarray = None  # attitude sample times (s)
    occultation_fraction: np.ndarray = None  # f(t) at sample_time
    earth_icrs: np.ndarray = None  # (n, 3) unit vector to the Earth centre at sample_time
    earth_radius: np.ndarray = None  # (n,) angular radius (rad) of the Earth + atmosphere
    off_pointing_seconds: float = 0.0  # CALI good time away from the reference: not imaged

    def exposure(self, occ_type: str) -> float:
        return float(intervals.duration(self.class_gti[occ_type]))


def interpolate_positions(orbit_time, position, times):
    """Orbit positions at `times`, linear per axis (ICD: orbit sampled at about 1 Hz)."""
    return np.stack([np.interp(times, orbit_time, position[:, k]) for k in range(3)], axis=-1)


def rotation_from_deg(qparam, reference):
    """Angle (deg) of the rotation taking `reference` to each attitude (boresight and roll)."""
    overlap = np.abs(np.asarray(qparam, dtype=float) @ np.asarray(reference, dtype=float))
    return np.degrees(2.0 * np.arccos(np.clip(overlap, 0.0, 1.0)))


def reference_attitude(qparam, candidates=200):
    """The attitude held longest: among evenly spaced samples, the one with the most samples
    within POINTING_TOLERANCE_DEG of it, averaged over those (slews, roll changes and other
    pointings left out)."""
    picks = np.unique(np.linspace(0, len(qparam) - 1, min(candidates, len(qparam))).astype(int))
    support = [rotation_from_deg(qparam, qparam[k]) <= POINTING_TOLERANCE_DEG for k in picks]
    best = support[int(np.argmax([s.sum() for s in support]))]
    return instrument.mean_quaternion(qparam[best])


def imaging_timeline(att_time, qparam, orbit_time, position, good_time, occ_types,
                     peof_min=instrument.PEOF_MIN_DEFAULT, peof_max=instrument.PEOF_MAX_DEFAULT,
                     grid=None) -> ImagingTimeline:
    """Reference attitude, f(t) on the attitude grid and the good time of each occultation type."""
    att_time = np.asarray(att_time, dtype=float)
    qparam = np.asarray(qparam, dtype=float)
    in_good = intervals.mask_times(att_time, good_time)
    if not np.any(in_good):
        empty = np.zeros((0, 2))
        return ImagingTimeline(instrument.quaternion_from_pointing(0.0, 0.0), empty,
                               {occ: empty for occ in occ_types}, att_time,
                               np.zeros(len(att_time)),
                               np.tile([-1.0, 0.0, 0.0], (len(att_time), 1)),
                               np.zeros(len(att_time)))
    reference = reference_attitude(qparam[in_good])
    on_target = intervals.from_boolean_samples(
        att_time, rotation_from_deg(qparam, reference) <= POINTING_TOLERANCE_DEG)
    imaging_time = intervals.intersect(good_time, on_target)

    grid = occultation.field_of_view_grid() if grid is None else grid
    positions = interpolate_positions(orbit_time, position, att_time)
    fraction = occultation.occultation_fraction(qparam, positions, grid)
    earth_icrs, earth_radius = instrument.earth_direction_and_radius(positions)
    classes = occultation.occultation_classes(fraction, peof_min, peof_max)
    class_gti = {occ: occultation.class_intervals(att_time, classes, occ, imaging_time)
                 for occ in occ_types}
    off_pointing = float(intervals.duration(good_time) - intervals.duration(imaging_time))
    return ImagingTimeline(reference, imaging_time, class_gti, att_time, fraction, earth_icrs,
                           earth_radius, max(off_pointing, 0.0))
