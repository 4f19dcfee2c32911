"""Attitude of a scenario and the sample times of its auxiliary files (ICD section 2: ORBIT and
ATTITUDE tables; SCIENCE 'Earth and orbit').

- Orbit and SAA: the circular orbit and the SAA boxes belong to the scenario
  (simu/scenario.py: `orbit_state`, `saa_flags`), which chooses the demo's orbit phase with them.
- Attitude: the pointing plan; stable segments hold quaternion_from_pointing (FLAG_ATT 0xAA),
  the time between them is a slerp slew (0x55).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from ecpi_beam import instrument
from ecpi_beam.simu.scenario import Scenario, pointing_end

FLAG_STABLE = 0xAA
FLAG_SLEWING = 0x55
AUX_MARGIN_S = 10.0  # attitude/orbit cover [TSTART - margin, TSTOP + margin]


def aux_times(scenario: Scenario) -> np.ndarray:
    """1 Hz sample times of the attitude and orbit files, covering the observation."""
    t0 = np.floor(scenario.tstart - AUX_MARGIN_S)
    return t0 + np.arange(int(np.ceil(scenario.tstop + AUX_MARGIN_S - t0)) + 1, dtype=float)


class AttitudePlan:
    """Attitude of the pointing plan at any time: stable holds and slerp slews between them."""

    def __init__(self, scenario: Scenario):
        pointings = scenario.resolved_pointings()
        rotations, knots = [], []
        first = pointings[0]
        first_q = instrument.quaternion_from_pointing(first.ra, first.dec, first.roll)
        if first.start > 0.0:
            # the observation opens on the end of a slew of initial_slew_deg towards pointing 0
            offset = Rotation.from_euler("y", scenario.initial_slew_deg, degrees=True)
            rotations.append((Rotation.from_quat(first_q) * offset).as_quat())
            knots.append(scenario.tstart - AUX_MARGIN_S - 1.0)
        for k, p in enumerate(pointings):
            q = instrument.quaternion_from_pointing(p.ra, p.dec, p.roll)
            end = pointing_end(p) if p.duration is not None else (
                pointings[k + 1].start if k + 1 < len(pointings) else scenario.duration)
            t_begin = scenario.tstart + p.start
            t_end = max(scenario.tstart + end, t_begin)
            if k == len(pointings) - 1:
                t_end = max(t_end, scenario.tstop + AUX_MARGIN_S + 1.0)
            if knots and t_begin <= knots[-1]:  # no slew time: keep the knots increasing
                t_begin = knots[-1] + 1e-3
            for t in (t_begin, max(t_end, t_begin + 1e-3)):
                rotations.append(q)
                knots.append(t)
        if knots[0] > scenario.tstart - AUX_MARGIN_S - 1.0:  # hold pointing 0 before it starts
            rotations.insert(0, rotations[0])
            knots.insert(0, scenario.tstart - AUX_MARGIN_S - 1.0)
        self._knots = np.array(knots)
        quats = np.array(rotations)
        for k in range(1, len(quats)):  # shortest arcs for slerp
            if quats[k] @ quats[k - 1] < 0:
                quats[k] = -quats[k]
        self._slerp = Slerp(self._knots, Rotation.from_quat(quats))
        self._stable = self._stable_intervals(scenario, pointings)

    @staticmethod
    def _stable_intervals(scenario, pointings) -> np.ndarray:
        out = []
        for k, p in enumerate(pointings):
            end = pointing_end(p) if p.duration is not None else (
                pointings[k + 1].start if k + 1 < len(pointings) else np.inf)
            lo = -np.inf if (k == 0 and p.start <= 0.0) else scenario.tstart + p.start
            hi = np.inf if k == len(pointings) - 1 else scenario.tstart + end  # last one held
            out.append((lo, hi))
        return np.array(out)

    def quaternions(self, times) -> np.ndarray:
        """Scalar-last unit quaternions (n, 4), q4 >= 0."""
        t = np.clip(np.asarray(times, float), self._knots[0], self._knots[-1])
        q = self._slerp(t).as_quat()
        return np.where(q[:, 3:4] < 0, -q, q)

    def is_stable(self, times) -> np.ndarray:
        t = np.asarray(times, float)[:, None]
        return np.any((t >= self._stable[:, 0]) & (t <= self._stable[:, 1]), axis=1)

    def flags(self, times) -> np.ndarray:
        return np.where(self.is_stable(times), FLAG_STABLE, FLAG_SLEWING).astype(np.uint8)
