"""Slices for streaming: naming, the drip replay, the watcher, its per-observation progress
and watermark, bad files as they land, and the watch as a splittable DoFn's restriction."""
from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
from astropy.io import fits

from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.io import slices
from ecpi_beam.simu import scenario_with
from ecpi_beam.simu.drip import drip

TSTART = 3.0e8
A, STRAY, LATER = "0000000018", "0000000077", "0000000019"
SETTINGS = slices.WatchSettings(idle_after=30.0, idle_after_event=15.0, allowed_lateness=20.0,
                                longest_window=40.0, clock_step=20.0)


def tiny_scenario(duration=30.0, obs_id=A, tstart=TSTART):
    return scenario_with(name="tiny", obs_id=obs_id, seed=7, tstart=tstart,
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
    assert watcher.poll() == ([], []) and watcher.watermark is None
    for kind in ("att", "orb"):
        for seq in (0, 1):
            name = slices.slice_name(kind, "0000000018", seq)
            (tmp_path / name).write_bytes((out / name).read_bytes())
    assert watcher.poll() == ([], [])  # no events yet
    assert watcher.watermark == pytest.approx(TSTART + 20)
    name = slices.slice_name("evt", "0000000018", 1)
    (tmp_path / name).write_bytes((out / name).read_bytes())
    ready, faults = watcher.poll()
    assert [s.seq for s in ready] == [1] and faults == []
    assert watcher.poll() == ([], [])
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
    (dict(idle_after="0"), "[stream] idle_after = 0: expected a number > 0"),
    (dict(idle_after_event="-5"), "[stream] idle_after_event = -5"),
])
def test_stream_mistakes_are_one_line_errors(keys, expected):
    from ecpi_beam.errors import EcpiError

    with pytest.raises(EcpiError) as error:
        stream_section(**keys)
    assert expected in str(error.value) and "\n" not in str(error.value)


# ==============================================================================================
# Per-observation progress: what holds the watermark, what does not
# ==============================================================================================
@pytest.fixture(scope="module")
def observations(tmp_path_factory, dripped):
    """Slice folders: A (the tiny observation, 3 slices from TSTART), a stray observation
    (one slice, 3000 s earlier) and a later one (3 slices from TSTART + 100 s)."""
    folders = {A: dripped[0]}
    for obs_id, tstart, duration in ((STRAY, TSTART - 3000.0, 10.0),
                                     (LATER, TSTART + 100.0, 30.0)):
        folder = tmp_path_factory.mktemp(f"drip_{obs_id}")
        drip(tiny_scenario(duration, obs_id, tstart), str(folder), Caldb.open(default_caldb_dir()),
             speed=1e6, slice_seconds=10.0, sleep=lambda s: None)
        folders[obs_id] = folder
    return folders


def land(observations, watched, obs_id, seq, kinds=("att", "orb", "evt")):
    for kind in kinds:
        name = slices.slice_name(kind, obs_id, seq)
        shutil.copy(observations[obs_id] / name, watched / name)


def test_a_stray_observation_holds_nothing_and_is_processed_on_its_own(observations, tmp_path):
    watcher = slices.SliceWatcher([str(tmp_path)], SETTINGS, now=0.0)
    land(observations, tmp_path, A, 0)
    land(observations, tmp_path, A, 1)
    watcher.poll(now=1.0)
    assert watcher.watermark == pytest.approx(TSTART + 20)
    land(observations, tmp_path, STRAY, 0)  # 3000 s behind: every window of it is closed
    (stray,), faults = watcher.poll(now=2.0)
    assert faults == [] and stray.obs_id == STRAY
    # placed on the stream's clock ahead of the watermark, by whole clock steps
    assert stray.clock_offset % SETTINGS.clock_step == 0
    assert stray.stream_start >= watcher.watermark
    land(observations, tmp_path, A, 2)
    watcher.poll(now=3.0)
    assert watcher.watermark == pytest.approx(TSTART + 30)  # the stray held nothing back


def test_an_earlier_observation_gone_quiet_stops_holding(observations, tmp_path):
    watcher = slices.SliceWatcher([str(tmp_path)], SETTINGS, now=0.0)
    land(observations, tmp_path, A, 0)
    watcher.poll(now=1.0)
    land(observations, tmp_path, LATER, 0)  # the next pointing begins
    watcher.poll(now=2.0)
    assert watcher.watermark == pytest.approx(TSTART + 10)  # A may still deliver
    land(observations, tmp_path, LATER, 1)
    watcher.poll(now=3.0)
    # the later observation has covered 20 s >= idle_after_event: A holds no more (event time)
    assert watcher.watermark == pytest.approx(TSTART + 120)
    # processing time: a quiet observation stops holding after idle_after s
    alone = tmp_path / "alone"
    alone.mkdir()
    land(observations, alone, A, 0)
    quiet = slices.SliceWatcher([str(alone)], SETTINGS, now=0.0)
    quiet.poll(now=1.0)
    assert quiet.is_idle(quiet.observations[A], now=1.0 + 29.0) is False
    assert quiet.is_idle(quiet.observations[A], now=1.0 + 31.0) is True


def test_an_observation_that_keeps_delivering_is_not_idled_by_a_stray_future_slice(
        observations, tmp_path):
    watcher = slices.SliceWatcher([str(tmp_path)], SETTINGS, now=0.0)
    land(observations, tmp_path, A, 0)
    watcher.poll(now=1.0)
    land(observations, tmp_path, LATER, 0)  # one 10 s slice: less than idle_after_event
    watcher.poll(now=2.0)
    land(observations, tmp_path, A, 1)
    watcher.poll(now=3.0)
    assert watcher.watermark == pytest.approx(TSTART + 20)  # A still drives it


def test_a_missing_slice_holds_its_observation_at_most_idle_after(observations, tmp_path):
    watcher = slices.SliceWatcher([str(tmp_path)], SETTINGS, now=0.0)
    land(observations, tmp_path, A, 0)
    land(observations, tmp_path, A, 2)  # 1 is missing
    ready, _ = watcher.poll(now=1.0)
    assert [s.seq for s in ready] == [0, 2]  # each slice is used as soon as it is complete
    assert watcher.watermark == pytest.approx(TSTART + 10)
    watcher.poll(now=1.0 + SETTINGS.idle_after + 1.0)
    assert watcher.watermark == pytest.approx(TSTART + 30)


def _damage(tmp_path, observations, obs_id, seq, kind, how):
    name = slices.slice_name(kind, obs_id, seq)
    data = (observations[obs_id] / name).read_bytes()
    if how == "truncated":
        data = data[:len(data) // 2]
    elif how == "garbage":
        data = b"not a FITS file at all " * 200
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


@pytest.mark.parametrize("kind, how, expected", [
    ("evt", "truncated", "truncated file: extension EVENTS needs"),
    ("evt", "garbage", "not a FITS file"),
    ("att", "truncated", "truncated"),
])
def test_a_bad_file_is_a_fault_as_it_lands_and_the_stream_goes_on(
        observations, tmp_path, kind, how, expected):
    watcher = slices.SliceWatcher([str(tmp_path)], SETTINGS, now=0.0)
    land(observations, tmp_path, A, 0)
    kinds = [k for k in ("att", "orb", "evt") if k != kind]
    land(observations, tmp_path, A, 1, kinds)
    bad = _damage(tmp_path, observations, A, 1, kind, how)
    ready, faults = watcher.poll(now=1.0)
    assert [s.seq for s in ready] == [0]
    assert faults[0] == (A, 1, str(bad), faults[0].reason) and expected in faults[0].reason
    if kind == "att":  # its event slice cannot be calibrated: skipped, said so
        assert "attitude or orbit slice of the same number was rejected" in faults[1].reason
    land(observations, tmp_path, A, 2)
    ready, faults = watcher.poll(now=2.0)
    assert [s.seq for s in ready] == [2] and faults == []
    assert watcher.watermark == pytest.approx(TSTART + 30)  # the bad slice holds nothing


def test_a_file_whose_header_names_another_observation_is_a_fault(observations, tmp_path):
    source = observations[A] / slices.slice_name("evt", A, 0)
    shutil.copy(source, tmp_path / slices.slice_name("evt", LATER, 0))
    _, (fault,) = slices.SliceWatcher([str(tmp_path)], SETTINGS).poll()
    assert fault.obs_id == LATER and fault.line.endswith(
        f"primary header OBS_ID = '{A}', expected '{LATER}' as in the file name")


def test_events_without_attitude_are_skipped_once_their_observation_goes_quiet(
        observations, tmp_path):
    watcher = slices.SliceWatcher([str(tmp_path)], SETTINGS, now=0.0)
    land(observations, tmp_path, A, 0, ("evt",))
    assert watcher.poll(now=1.0) == ([], [])
    _, (fault,) = watcher.poll(now=1.0 + SETTINGS.idle_after)
    assert fault.seq == 0 and "no attitude and orbit slice 0 came" in fault.reason


def test_the_watch_is_the_restriction_a_checkpoint_carries(observations, tmp_path):
    from ecpi_beam.pipelines.stream import WatchTracker

    watcher = slices.SliceWatcher([str(tmp_path)], SETTINGS, now=0.0)
    land(observations, tmp_path, A, 0)
    tracker = WatchTracker(watcher)
    assert tracker.try_claim(watcher)
    watcher.poll(now=1.0)
    assert tracker.try_split(0.5) is None  # no runner-initiated split: one watch per folder
    primary, residual = tracker.try_split(0.0)  # the self-checkpoint of defer_remainder
    assert primary.finished and residual is watcher and not tracker.try_claim(watcher)
    resumed = pickle.loads(pickle.dumps(residual))  # as a runner stores and resumes it
    land(observations, tmp_path, A, 1)
    ready, _ = resumed.poll(now=2.0)
    assert [s.seq for s in ready] == [1]  # nothing reported twice
    assert resumed.watermark == pytest.approx(TSTART + 20)


# ==============================================================================================
# Around the stream: the runner it runs on, the failures it reports as they land
# ==============================================================================================
def test_streaming_runs_on_the_prism_binary_of_the_setup_never_a_download(tmp_path, monkeypatch):
    from apache_beam.options.pipeline_options import PrismRunnerOptions, StandardOptions

    from ecpi_beam.errors import EcpiError
    from ecpi_beam.pipelines.stream import PRISM_ENV, streaming_options

    binary = tmp_path / "prism"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv(PRISM_ENV, str(binary))
    options = streaming_options(["--runner", "DirectRunner"])
    assert options.view_as(StandardOptions).runner == "PrismRunner"
    assert options.view_as(StandardOptions).streaming
    assert options.view_as(PrismRunnerOptions).prism_location == str(binary)
    monkeypatch.setenv(PRISM_ENV, str(tmp_path / "missing"))
    with pytest.raises(EcpiError) as error:
        streaming_options([])
    assert "make prism" in str(error.value) and "\n" not in str(error.value)
    flink = streaming_options(["--runner", "FlinkRunner"])  # another runner: left as given
    assert flink.view_as(StandardOptions).runner == "FlinkRunner"


def test_failures_are_printed_as_they_land_once_and_kept_in_failures_jsonl(tmp_path, capsys):
    import json
    import time as clock

    from ecpi_beam.pipelines.stream import FailureReporter
    from ecpi_beam.transforms.failures import FailureLog

    log = FailureLog(str(tmp_path))
    with FailureReporter(str(tmp_path), interval=0.05) as reporter:
        log.record_slice(A, 4, "/in/ECL-EVT-SEC_0000000018_000004.fits", "truncated file")
        deadline = clock.monotonic() + 10
        while not (tmp_path / "failures.jsonl").exists() and clock.monotonic() < deadline:
            clock.sleep(0.05)
        printed = capsys.readouterr().err
        assert printed == "error: /in/ECL-EVT-SEC_0000000018_000004.fits: truncated file\n"
        (record,) = [json.loads(line) for line in
                     (tmp_path / "failures.jsonl").read_text().splitlines()]
        assert (record["obs_id"], record["slice"], record["reason"]) == (A, 4, "truncated file")
    assert capsys.readouterr().err == ""  # each record once


def test_a_backlog_found_at_once_is_on_time_and_a_slice_behind_every_window_is_not(
        observations, tmp_path):
    """Slices found together in one poll advance the watermark together: none of them is
    late. One that lands after the watermark has passed its every window is skipped."""
    for seq in (0, 1, 2):
        land(observations, tmp_path, A, seq, ("att", "orb") if seq == 0 else ("att", "orb", "evt"))
    settings = slices.WatchSettings(idle_after=30.0, idle_after_event=15.0,
                                    allowed_lateness=0.0, longest_window=10.0, clock_step=10.0)
    watcher = slices.SliceWatcher([str(tmp_path)], settings, now=0.0)
    ready, faults = watcher.poll(now=1.0)
    assert [s.seq for s in ready] == [1, 2] and faults == []
    land(observations, tmp_path, A, 0, ("evt",))  # 30 s behind, windows of 10 s: all closed
    ready, (fault,) = watcher.poll(now=2.0)
    assert ready == [] and fault.seq == 0 and "beyond the allowed lateness" in fault.reason
