"""CALI good time kernels (kernels/gti.py)."""
from types import SimpleNamespace

import numpy as np

from ecpi_beam.kernels import intervals
from ecpi_beam.kernels.gti import attitude_gti, good_time, saa_gti, telemetry_gti


def test_telemetry_gti_sorts_merges_and_drops_empty_intervals():
    gti = telemetry_gti([50.0, 0.0, 10.0, 70.0], [60.0, 12.0, 20.0, 70.0])
    np.testing.assert_array_equal(gti, [[0.0, 20.0], [50.0, 60.0]])


def test_saa_gti_excludes_outer_and_deep_saa_samples():
    time = np.arange(10.0)
    flag = np.array([0, 0, 0x80, 0x80, 0, 0, 0x40, 0xC0, 0, 0x01], dtype=np.uint8)
    gti = saa_gti(time, flag)
    # bit 0x01 is not an SAA bit: sample 9 is good; the set spans at most the samples and
    # intervals are half-open, so the last sample is tested just before it
    probe = np.append(time[:-1], time[-1] - 1e-6)
    np.testing.assert_array_equal(intervals.mask_times(probe, gti), (flag & 0xC0) == 0)


def test_attitude_gti_keeps_only_stable_samples():
    time = np.arange(8.0) * 2.0
    flag = np.array([0xAA, 0xAA, 0x55, 0x55, 0xAA, 0xAA, 0xAA, 0x55], dtype=np.uint8)
    gti = attitude_gti(time, flag)
    np.testing.assert_array_equal(intervals.mask_times(time, gti), flag == 0xAA)
    assert len(gti) == 2


def fake_observation(tstart=100.0, tstop=200.0):
    time = np.arange(90.0, 211.0)
    flag_pvt = np.where((time >= 150) & (time < 160), 0x80, 0).astype(np.uint8)
    flag_att = np.where((time >= 120) & (time < 125), 0x55, 0xAA).astype(np.uint8)
    return SimpleNamespace(
        keywords={"TSTART": tstart, "TSTOP": tstop},
        telemetry_gti=np.array([[95.0, 180.0], [185.0, 300.0]]),
        orbit=SimpleNamespace(time=time, flag=flag_pvt),
        attitude=SimpleNamespace(time=time, flag=flag_att))


def test_good_time_combines_and_clips_to_the_observation():
    good = good_time(fake_observation())
    assert set(good) == {"TLM", "SAA", "ATT", "ALL"}
    for name, gti in good.items():
        assert gti.min() >= 100.0 and gti.max() <= 200.0, name
    np.testing.assert_array_equal(good["TLM"], [[100.0, 180.0], [185.0, 200.0]])
    expected = intervals.intersect(intervals.intersect(good["TLM"], good["SAA"]), good["ATT"])
    np.testing.assert_allclose(good["ALL"], expected)
    # samples flagged bad are outside ALL; a time good for all three is inside
    assert not intervals.mask_times([152.0, 122.0, 182.0], good["ALL"]).any()
    assert intervals.mask_times([130.0, 190.0], good["ALL"]).all()
    assert intervals.duration(good["ALL"]) < 100.0 - 5 - 10 - 5 + 2  # midpoint-rule slack
