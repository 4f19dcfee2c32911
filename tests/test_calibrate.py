"""CALI calibration kernel: PHA -> ENERGY -> PI, bad pixels and good time (kernels/calibrate.py)."""
from types import SimpleNamespace

import numpy as np
import pytest

from ecpi_beam import instrument
from ecpi_beam.io.events import CALIBRATED_DTYPE, EVENT_DTYPE
from ecpi_beam.kernels.calibrate import DROP_REASONS, calibrate_events


def pixel_calibration(gain=0.04, offset=1.0):
    """Uniform calibration with one dead pixel (3, 4) and one noisy pixel (5, 6)."""
    status = np.zeros((80, 80), dtype=np.int16)
    status[3, 4] = 2
    status[5, 6] = 1
    gain_map = np.full((80, 80), gain)
    gain_map[10, 20] = 2 * gain  # one pixel with its own gain: the lookup must be per pixel
    return SimpleNamespace(gain=gain_map, offset=np.full((80, 80), offset), status=status,
                           effic=np.ones((80, 80)))


def make_events(rows):
    """rows of (TIME, IDET, JDET, PHA, FLAG)."""
    return np.array([tuple(r) for r in rows], dtype=EVENT_DTYPE)


def test_energy_and_pi_follow_the_icd_formula_per_pixel():
    events = make_events([(1.0, 0, 0, 1000, 0), (2.0, 10, 20, 1000, 0), (3.0, 79, 79, 0, 0)])
    calibrated, drops = calibrate_events(events, pixel_calibration())
    assert calibrated.dtype == CALIBRATED_DTYPE
    np.testing.assert_allclose(calibrated["ENERGY"], [41.0, 81.0, 1.0], rtol=1e-6)
    # PI c covers [2.0 + 0.1 c, 2.1 + 0.1 c): 41 keV -> 390, 81 keV -> 790, below 2 keV -> 0
    np.testing.assert_array_equal(calibrated["PI"], [390, 790, 0])
    np.testing.assert_array_equal(calibrated["PI"], instrument.energy_to_pi(calibrated["ENERGY"]))
    assert drops == {"dead_pixel": 0, "noisy_pixel": 0, "outside_gti": 0}


def test_dead_and_noisy_pixels_are_dropped_and_counted_apart():
    events = make_events([(1.0, 3, 4, 100, 0), (2.0, 5, 6, 100, 0), (3.0, 5, 6, 100, 0),
                          (4.0, 1, 1, 100, 0)])
    calibrated, drops = calibrate_events(events, pixel_calibration())
    assert drops == {"dead_pixel": 1, "noisy_pixel": 2, "outside_gti": 0}
    np.testing.assert_array_equal(calibrated["TIME"], [4.0])


def test_flag_bits_and_event_columns_are_kept():
    events = make_events([(1.5, 2, 7, 300, 0b01), (2.5, 40, 41, 400, 0b10), (3.5, 9, 9, 5, 0b11)])
    calibrated, _ = calibrate_events(events, pixel_calibration())
    for name in EVENT_DTYPE.names:
        np.testing.assert_array_equal(calibrated[name], events[name])


def test_events_outside_good_time_are_dropped_after_pixel_reasons():
    events = make_events([(0.5, 1, 1, 10, 0), (1.5, 1, 1, 10, 0), (2.0, 1, 1, 10, 0),
                          (5.0, 3, 4, 10, 0), (5.5, 1, 1, 10, 0)])
    good = np.array([[1.0, 2.0], [5.2, 6.0]])  # start <= t < stop
    calibrated, drops = calibrate_events(events, pixel_calibration(), good)
    np.testing.assert_array_equal(calibrated["TIME"], [1.5, 5.5])
    # the dead-pixel event at 5.0 is also outside the good time: counted once, as dead_pixel
    assert drops == {"dead_pixel": 1, "noisy_pixel": 0, "outside_gti": 2}
    assert len(calibrated) + sum(drops.values()) == len(events)


def test_event_count_is_conserved_on_random_events():
    rng = np.random.default_rng(1)
    n = 20000
    events = np.zeros(n, dtype=EVENT_DTYPE)
    events["TIME"] = np.sort(rng.uniform(0, 100, n))
    events["IDET"] = rng.integers(0, 80, n)
    events["JDET"] = rng.integers(0, 80, n)
    events["PHA"] = rng.integers(0, 4096, n)
    pixcal = pixel_calibration()
    pixcal.status[rng.integers(0, 80, 300), rng.integers(0, 80, 300)] = 2
    calibrated, drops = calibrate_events(events, pixcal, np.array([[10.0, 60.0]]))
    assert set(drops) == set(DROP_REASONS)
    assert all(count > 0 for count in drops.values())
    assert len(calibrated) + sum(drops.values()) == n


def test_empty_chunk():
    calibrated, drops = calibrate_events(np.zeros(0, dtype=EVENT_DTYPE), pixel_calibration(),
                                         np.zeros((0, 2)))
    assert len(calibrated) == 0 and calibrated.dtype == CALIBRATED_DTYPE
    assert sum(drops.values()) == 0


@pytest.mark.parametrize("pha,expected_pi", [(0, 0), (4095, instrument.N_PI - 1)])
def test_pi_is_clipped_to_the_channel_range(pha, expected_pi):
    calibrated, _ = calibrate_events(make_events([(1.0, 0, 0, pha, 0)]),
                                     pixel_calibration(gain=0.1, offset=0.0))
    assert calibrated["PI"][0] == expected_pi
