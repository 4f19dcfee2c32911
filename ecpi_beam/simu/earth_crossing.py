"""Observations in which the Earth rises into the field (docs/science.md "Earth, orbit and time").

An inertial pointing in the orbital plane, ahead of the Earth's apparent motion: seen from
the spacecraft the Earth centre moves at 360 deg per orbit (0.062 deg/s at 625 km) towards
-velocity, so a boresight placed `end_angle_deg` from the Earth centre (towards -velocity) at
the end of the observation sees the Earth limb rise through the field during it. With the
Earth's angular radius of 67.7 deg, an end angle below about 65 deg brings the limb past the
boresight: the Earth covers half the field or more, yet stays in PEO (f < 0.95).
"""
from __future__ import annotations

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.simu.scenario import Orbit, Pointing, Scenario, orbit_state, scenario_with

EARTH_RISE_ORBIT = Orbit(altitude_km=625.0, inclination_deg=30.0, raan_deg=0.0, phase_deg=80.0)


def earth_rise_pointing(orbit: Orbit, tstart: float, duration: float,
                        end_angle_deg: float = 60.0, roll_deg: float = 0.0) -> Pointing:
    """The pointing (held from tstart) that the Earth centre reaches `end_angle_deg` from at
    tstart + duration, approaching it along the orbital plane."""
    position, velocity = orbit_state(orbit, tstart, [tstart + duration])
    to_earth = -position[0] / np.linalg.norm(position[0])
    ahead = -velocity[0] / np.linalg.norm(velocity[0])
    angle = np.radians(end_angle_deg)
    ra, dec = instrument.unit_to_radec(np.cos(angle) * to_earth + np.sin(angle) * ahead)
    return Pointing(ra=float(ra), dec=float(dec), roll=float(roll_deg), start=0.0)


def earth_rise_scenario(name: str = "earth_rise", obs_id: str = "0000000201", seed: int = 201,
                        duration: float = 300.0, end_angle_deg: float = 60.0,
                        roll_deg: float = 0.0, tstart: float = 3.0e8,
                        orbit: Orbit = EARTH_RISE_ORBIT, **changes) -> Scenario:
    """A scenario whose Earth rises into the field (CXB hidden, albedo on, internal
    background); `changes` as for scenario_with (sources, background, ...)."""
    pointing = earth_rise_pointing(orbit, tstart, duration, end_angle_deg, roll_deg)
    return scenario_with(Scenario(name=name, obs_id=obs_id, seed=seed, tstart=tstart,
                                  duration=duration, orbit=orbit), pointings=[pointing],
                         initial_slew_deg=0.0, **changes)
