"""Orbit and attitude of a scenario (ICD section 2: ORBIT and ATTITUDE tables; SCIENCE 'Earth
and orbit').

- Orbit: circular Keplerian orbit in ICRS (Earth-centred, m and m/s), radius Earth radius
  (instrument.EARTH_RADIUS_KM) + altitude.
- SAA: geographic longitude from the ICRS position minus the Earth rotation angle (IAU 2000,
  with TT used for UT1: about 0.3 deg of error, irrelevant for a box), geocentric latitude;
  outer box lon -90..+40, lat -50..0 deg (FLAG_PVT 0x80), deep box lon -70..+10,
  lat -40..-10 deg (0x80 | 0x40).
- Attitude: the pointing plan; stable segments hold quaternion_from_pointing (FLAG_ATT 0xAA),
  the time between them is a slerp slew (0x55).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from ecpi_beam import instrument
from ecpi_beam.simu.scenario import Orbit, Scenario, pointing_end

GM_EARTH = 3.986004418e14  # m3 s-2
FLAG_STABLE = 0xAA
FLAG_SLEWING = 0x55
FLAG_OUTER_SAA = 0x80
FLAG_DEEP_SAA = 0x40
SAA_OUTER_BOX = ((-90.0, 40.0), (-50.0, 0.0))  # (lon range, lat range) deg
SAA_DEEP_BOX = ((-70.0, 10.0), (-40.0, -10.0))
AUX_MARGIN_S = 10.0  # attitude/orbit cover [TSTART - margin, TSTOP + margin]


def aux_times(scenario: Scenario) -> np.ndarray:
    """1 Hz sample times of the attitude and orbit files, covering the observation."""
    t0 = np.floor(scenario.tstart - AUX_MARGIN_S)
    return t0 + np.arange(int(np.ceil(scenario.tstop + AUX_MARGIN_S - t0)) + 1, dtype=float)


def orbit_state(orbit: Orbit, tstart: float, times) -> tuple[np.ndarray, np.ndarray]:
    """ICRS position (n, 3) m and velocity (n, 3) m/s of the circular orbit at `times`."""
    radius = (instrument.EARTH_RADIUS_KM + orbit.altitude_km) * 1e3
    mean_motion = np.sqrt(GM_EARTH / radius**3)
    u = np.radians(orbit.phase_deg) + mean_motion * (np.asarray(times, float) - tstart)
    raan, inc = np.radians(orbit.raan_deg), np.radians(orbit.inclination_deg)
    node = np.array([np.cos(raan), np.sin(raan), 0.0])
    normal_in_plane = np.array([-np.sin(raan) * np.cos(inc), np.cos(raan) * np.cos(inc),
                                np.sin(inc)])
    cos_u, sin_u = np.cos(u)[:, None], np.sin(u)[:, None]
    position = radius * (cos_u * node + sin_u * normal_in_plane)
    velocity = radius * mean_motion * (-sin_u * node + cos_u * normal_in_plane)
    return position, velocity


def earth_rotation_angle(time_tt) -> np.ndarray:
    """Earth rotation angle (rad) at TT seconds since MJDREF (IAU 2000, UT1 ~ TT)."""
    days = instrument.MJDREFI + instrument.MJDREFF + np.asarray(time_tt, float) / 86400.0 - 51544.5
    return 2.0 * np.pi * ((0.7790572732640 + 1.00273781191135448 * days) % 1.0)


def geographic_lon_lat(position_m, time_tt) -> tuple[np.ndarray, np.ndarray]:
    """Geographic longitude in [-180, 180) and geocentric latitude (deg) under the spacecraft."""
    pos = np.asarray(position_m, float)
    lon = np.degrees(np.arctan2(pos[:, 1], pos[:, 0]) - earth_rotation_angle(time_tt))
    lat = np.degrees(np.arcsin(pos[:, 2] / np.linalg.norm(pos, axis=1)))
    return (lon + 180.0) % 360.0 - 180.0, lat


def saa_flags(position_m, time_tt) -> np.ndarray:
    """FLAG_PVT: 0x80 inside the outer SAA box, plus 0x40 inside the deep box."""
    lon, lat = geographic_lon_lat(position_m, time_tt)

    def inside(box):
        (lon_lo, lon_hi), (lat_lo, lat_hi) = box
        return (lon >= lon_lo) & (lon <= lon_hi) & (lat >= lat_lo) & (lat <= lat_hi)

    return (np.where(inside(SAA_OUTER_BOX), FLAG_OUTER_SAA, 0)
            | np.where(inside(SAA_DEEP_BOX), FLAG_DEEP_SAA, 0)).astype(np.uint8)


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
