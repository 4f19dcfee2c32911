"""Per-observation imaging timeline: its stable pointings, Earth occultation and good time per
class.

ICD section 1 (Earth occultation classes): a product for occultation type T uses the time in
class T and every lower class. Sky images are made in the frame of one attitude, so an
observation is imaged pointing by pointing: each stable pointing (the attitude steady within
POINTING_TOLERANCE_DEG) held for at least `min_pointing_s` of good time is imaged on its own,
with its own good time, exposure and frame. Slews are not good time (FLAG_ATT, kernels/gti.py);
good time on no such pointing (an attitude that drifts, a pointing held too briefly) is kept in
`off_pointing_seconds` and reported (transforms/bube.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.kernels import intervals, occultation

# Rotation from a pointing's attitude (boresight or roll) beyond which time is not imaged in
# it: a tenth of the ICD's sky pixel (4.5 mm / 460 mm = 0.56 deg), i.e. a shift of the mask's
# shadow by 0.4 mm, a tenth of a detector pixel, so the accumulated shadowgram stays sharp.
POINTING_TOLERANCE_DEG = 0.05
# Good time a pointing needs to be imaged ([bube] pointing_min_time): the shortest image time
# scale of ECLAIRs' on-board trigger and of the streaming search (20 s).
POINTING_MIN_TIME_DEFAULT = 20.0


@dataclass(frozen=True, eq=False)
class Pointing:
    """One stable pointing of an observation, as its products name it (docs/products.md)."""

    index: int  # 0, 1, ... in the order of their first good time
    quaternion: np.ndarray  # (4,) scalar-last: the pointing's mean attitude
    tstart: float  # first and last second of its imaged good time
    tstop: float


@dataclass(frozen=True)
class ImagingTimeline:
    """What BUBE and IMAG need of one observation's attitude, orbit and good time.

    An observation holding one pointing has one timeline (`pointing` None, `pointings` empty),
    exactly as before observations of several pointings were imaged. With several, the
    observation's timeline is that of its first pointing, and `pointings` holds each
    pointing's own timeline (`for_pointing(k)`), labelled with its `Pointing`.
    """

    reference_quaternion: np.ndarray  # (4,) scalar-last: the attitude of the sky images
    good_time: np.ndarray  # (n, 2): CALI good time, on this pointing
    class_gti: dict = field(default_factory=dict)  # occ type -> (n, 2), cumulative classes
    sample_time: np.ndarray = None  # attitude sample times (s)
    occultation_fraction: np.ndarray = None  # f(t) at sample_time
    earth_icrs: np.ndarray = None  # (n, 3) unit vector to the Earth centre at sample_time
    earth_radius: np.ndarray = None  # (n,) angular radius (rad) of the Earth + atmosphere
    off_pointing_seconds: float = 0.0  # CALI good time on no imaged pointing
    pointing: Pointing | None = None  # this timeline's pointing, when there are several
    pointings: tuple = ()  # every pointing's ImagingTimeline, when there are several
    slew_seconds: float = 0.0  # time of the observation flagged slewing (FLAG_ATT 0x55)

    def exposure(self, occ_type: str) -> float:
        return float(intervals.duration(self.class_gti[occ_type]))

    @property
    def n_pointings(self) -> int:
        return len(self.pointings) or 1

    def for_pointing(self, index: int) -> "ImagingTimeline":
        """The timeline of pointing `index` (0 is the first, or the only one)."""
        if not self.pointings:
            if index != 0:
                raise KeyError(f"pointing {index}: the observation holds one pointing")
            return self
        return self.pointings[index]

    def earth_in_field_seconds(self, occ_type: str, min_fraction: float) -> float:
        """Seconds of the class's good time with at least `min_fraction` of the field
        occulted by the Earth (attitude samples in the good time, each worth its spacing)."""
        if self.sample_time is None or self.occultation_fraction is None:
            return 0.0
        times = np.asarray(self.sample_time, dtype=float)
        if len(times) < 2:
            return 0.0
        inside = intervals.mask_times(times, self.class_gti[occ_type])
        step = float(np.median(np.diff(times)))
        return float(np.count_nonzero(inside & (self.occultation_fraction >= min_fraction))
                     * step)

    def class_gti_by_pointing(self) -> tuple:
        """(class_gti of pointing 0, of pointing 1, ...): what binning needs, small enough
        to travel with every event chunk (transforms/read.py)."""
        return tuple(self.for_pointing(k).class_gti for k in range(self.n_pointings))


def interpolate_positions(orbit_time, position, times):
    """Orbit positions at `times`, linear per axis (ICD: orbit sampled at about 1 Hz)."""
    return np.stack([np.interp(times, orbit_time, position[:, k]) for k in range(3)], axis=-1)


def rotation_from_deg(qparam, reference):
    """Angle (deg) of the rotation taking `reference` to each attitude (boresight and roll)."""
    overlap = np.abs(np.asarray(qparam, dtype=float) @ np.asarray(reference, dtype=float))
    return np.degrees(2.0 * np.arccos(np.clip(overlap, 0.0, 1.0)))


def _held_longest(qparam, candidates=200):
    """(mean attitude, support): among evenly spaced samples, the one with the most samples
    within POINTING_TOLERANCE_DEG of it; `support` marks those samples, averaged."""
    picks = np.unique(np.linspace(0, len(qparam) - 1, min(candidates, len(qparam))).astype(int))
    support = [rotation_from_deg(qparam, qparam[k]) <= POINTING_TOLERANCE_DEG for k in picks]
    best = support[int(np.argmax([s.sum() for s in support]))]
    return instrument.mean_quaternion(qparam[best]), best


def reference_attitude(qparam, candidates=200):
    """The attitude held longest: among evenly spaced samples, the one with the most samples
    within POINTING_TOLERANCE_DEG of it, averaged over those (slews, roll changes and other
    pointings left out)."""
    return _held_longest(qparam, candidates)[0]


def stable_pointings(att_time, qparam, good_time, min_seconds=POINTING_MIN_TIME_DEFAULT):
    """[(mean attitude, imaging time)] of the observation's stable pointings, in the order of
    their first good time: the attitude held longest, and every other one held for at least
    `min_seconds` of good time.

    The attitude held longest over the good time is taken first (its time is every attitude
    sample within POINTING_TOLERANCE_DEG of it, intersected with the good time: what was
    imaged when only that pointing was), then the longest-held of the samples left, and so on;
    a pointing revisited after another is one pointing. Their times are disjoint.
    """
    att_time = np.asarray(att_time, dtype=float)
    qparam = np.asarray(qparam, dtype=float)
    in_good = intervals.mask_times(att_time, good_time)
    free = np.ones(len(att_time), dtype=bool)  # samples not given to a pointing yet
    found = []
    while np.any(in_good & free):
        candidates = np.flatnonzero(in_good & free)
        left = intervals.intersect(good_time, intervals.from_boolean_samples(
            att_time, in_good & free))
        if found and intervals.duration(left) < min_seconds:
            break  # too little good time left for one more pointing
        reference, support = _held_longest(qparam[candidates])
        near = free & (rotation_from_deg(qparam, reference) <= POINTING_TOLERANCE_DEG)
        imaging = intervals.intersect(good_time, intervals.from_boolean_samples(att_time, near))
        if not found or (len(imaging) and intervals.duration(imaging) >= min_seconds):
            found.append((reference, imaging))
        free &= ~near
        free[candidates[support]] = False  # progress even if the mean attitude strays
    return sorted(found, key=lambda pointing: pointing[1][0, 0] if len(pointing[1]) else np.inf)


def imaging_timeline(att_time, qparam, orbit_time, position, good_time, occ_types,
                     peof_min=instrument.PEOF_MIN_DEFAULT, peof_max=instrument.PEOF_MAX_DEFAULT,
                     grid=None, min_pointing_s=POINTING_MIN_TIME_DEFAULT) -> ImagingTimeline:
    """Stable pointings, f(t) on the attitude grid and the good time of each occultation type
    on each pointing."""
    att_time = np.asarray(att_time, dtype=float)
    qparam = np.asarray(qparam, dtype=float)
    if not np.any(intervals.mask_times(att_time, good_time)):
        empty = np.zeros((0, 2))
        return ImagingTimeline(instrument.quaternion_from_pointing(0.0, 0.0), empty,
                               {occ: empty for occ in occ_types}, att_time,
                               np.zeros(len(att_time)),
                               np.tile([-1.0, 0.0, 0.0], (len(att_time), 1)),
                               np.zeros(len(att_time)))
    found = stable_pointings(att_time, qparam, good_time, min_pointing_s)

    grid = occultation.field_of_view_grid() if grid is None else grid
    positions = interpolate_positions(orbit_time, position, att_time)
    fraction = occultation.occultation_fraction(qparam, positions, grid)
    earth_icrs, earth_radius = instrument.earth_direction_and_radius(positions)
    classes = occultation.occultation_classes(fraction, peof_min, peof_max)
    imaged = sum(intervals.duration(imaging) for _, imaging in found)
    off_pointing = max(float(intervals.duration(good_time) - imaged), 0.0)
    timelines = [ImagingTimeline(
        reference, imaging,
        {occ: occultation.class_intervals(att_time, classes, occ, imaging) for occ in occ_types},
        att_time, fraction, earth_icrs, earth_radius, off_pointing)
        for reference, imaging in found]
    if len(timelines) == 1:
        return timelines[0]
    labelled = tuple(replace(timeline, pointing=Pointing(
        index, timeline.reference_quaternion, float(timeline.good_time[0, 0]),
        float(timeline.good_time[-1, 1]))) for index, timeline in enumerate(timelines))
    return replace(labelled[0], pointings=labelled)
