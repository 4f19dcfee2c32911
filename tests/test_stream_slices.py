"""Slices for streaming: naming, the drip replay, the watcher and its coverage watermark."""
from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.io import fits

from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.io import slices
from ecpi_beam.simu import scenario_with
from ecpi_beam.simu.drip import drip

TSTART = 3.0e8


def tiny_scenario(duration=30.0):
    return scenario_with(name="tiny", obs_id="0000000018", seed=7, tstart=TSTART,
                         duration=duration, initial_slew_deg=0.0,
                         pointings=[dict(ra=100.0, dec=20.0, start=0.0)])


@pytest.fixture(scope="module")
def dripped(tmp_path_factory):
    out = tmp_path_factory.mktemp("drip")
    landed = []
    truth = drip(tiny_scenario(), str(out), Caldb.open(default_caldb_dir()), speed=1e6,
                 slice_seconds=10.0, late={0: 1}, sleep=lambda s: None,
                 on_slice=lambda seq, kind, path, wall: landed.append((seq, kind)))
    return out, truth, landed


def test_slice_names_round_trip():
    name = slices.slice_name("evt", "obs_1-a", 12)
    assert name == "ECL-EVT-SEC_obs_1-a_000012.fits"
    assert slices.parse_slice_name(name) == ("evt", "obs_1-a", 12)
    assert slices.parse_slice_name(name + ".gz") == ("evt", "obs_1-a", 12)
    assert slices.parse_slice_name(name + ".part") is None
    assert slices.parse_slice_name("ECL-EVT-SEC_0000000018.fits") is None


def test_drip_writes_icd_slices_that_add_up_to_the_observation(dripped):
    out, truth, _ = dripped
    names = sorted(os.listdir(out))
    assert not [n for n in names if n.endswith(".part")]
    assert len(names) == 9  # 3 slices x 3 kinds
    total = 0
    for seq in range(3):
        with fits.open(out / slices.slice_name("evt", "0000000018", seq)) as hdus:
            events = hdus["EVENTS"].data
            assert set(events.columns.names) == {"TIME", "IDET", "JDET", "PHA", "FLAG"}
            lo, hi = hdus[0].header["TSTART"], hdus[0].header["TSTOP"]
            assert (lo, hi) == (TSTART + 10 * seq, TSTART + 10 * (seq + 1))
            assert events["TIME"].min() >= lo and events["TIME"].max() < hi
            assert hdus[0].header["OBS_ID"] == "0000000018"
            total += len(events)
        with fits.open(out / slices.slice_name("att", "0000000018", seq)) as hdus:
            att_time = hdus["ATTITUDE"].data["TIME"]
            assert att_time.min() <= lo and att_time.max() >= hi  # interpolable alone
    assert total == truth.n_events


def test_a_late_slice_lands_after_the_following_one(dripped):
    _, _, landed = dripped
    assert landed.index((0, "evt")) > landed.index((1, "evt"))
    assert landed.index((0, "att")) < landed.index((1, "att"))


def test_watcher_reports_complete_slices_once_and_the_coverage_watermark(dripped, tmp_path):
    out, _, _ = dripped
    watcher = slices.SliceWatcher([str(tmp_path)])
    assert watcher.poll() == [] and watcher.watermark() is None
    for kind in ("att", "orb"):
        for seq in (0, 1):
            name = slices.slice_name(kind, "0000000018", seq)
            (tmp_path / name).write_bytes((out / name).read_bytes())
    assert watcher.poll() == []  # no events yet
    assert watcher.watermark() == pytest.approx(TSTART + 20)
    name = slices.slice_name("evt", "0000000018", 1)
    (tmp_path / name).write_bytes((out / name).read_bytes())
    ready = watcher.poll()
    assert [s.seq for s in ready] == [1]
    assert watcher.poll() == []
    data = slices.read_slice(ready[0])
    assert data.events["TIME"].min() >= TSTART + 10
    assert data.attitude.qparam.shape[1] == 4 and np.all(data.orbit.time[1:] > data.orbit.time[:-1])


def stream_section(**keys):
    from ecpi_beam.params import parse_params, params_text

    return parse_params(params_text("/in", "/out", extra={"stream": keys}), check_paths=False)


def test_stream_defaults_are_the_image_trigger_time_scales():
    stream = stream_section().stream
    assert stream.window_lengths == (20, 80, 320, 1280)
    assert stream.window_periods == (10, 40, 160, 640)
    assert stream.tile_seconds == 10
    assert stream_section(window_lengths="[12, 48]").stream.window_periods == (6, 24)


@pytest.mark.parametrize("keys, expected", [
    (dict(window_lengths="[20, 0]"), "window_lengths = [20, 0]: expected a Python list of "
                                     "positive integer seconds"),
    (dict(window_lengths="[20, 80]", window_periods="[10]"), "one period per window length"),
    (dict(window_periods="[30, 40, 160, 640]"), "period 30 s is longer than its window"),
    (dict(snr_ths="2"), "[stream] snr_ths = 2: expected a number >= 3"),
    (dict(allowed_lateness="-1"), "[stream] allowed_lateness = -1"),
    (dict(window_lenghts="[20]"), "did you mean 'window_lengths'"),
])
def test_stream_mistakes_are_one_line_errors(keys, expected):
    from ecpi_beam.errors import EcpiError

    with pytest.raises(EcpiError) as error:
        stream_section(**keys)
    assert expected in str(error.value) and "\n" not in str(error.value)
