"""Streaming scenarios and a live `ecpi_run --streaming` run fed by the drip (docs/streaming.md).

Observations of 120 s (the demo's pointing and orbit, CXB + internal background), cut into
10 s slices: one with a GRB (FRED, peak 3 ph cm-2 s-1 at 70 s, 4 deg off axis), one quiet,
one pointed 5 deg from the Crab (catalogued in ECL-SRC-CAT, steady), and a stray slice of
another observation 3000 s earlier holding a bright burst. `LiveStream` runs `ecpi_run
params.ini --streaming` in a subprocess, waits until its watch has started, then drips a
scenario into the watched folder at 10x real time and records when each file lands, each
stderr line and the alerts.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import voeventparse
from apache_beam.coders import PickleCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.transforms.window import TimestampedValue

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.io.slices import SliceWatcher, slice_name
from ecpi_beam.kernels.catalogue import angular_separation_deg
from ecpi_beam.params import params_text, parse_params
from ecpi_beam.pipelines.stream import build_stream_pipeline
from ecpi_beam.simu import default_scenario, load_scenario, scenario_with
from ecpi_beam.simu.drip import drip

DURATION_S = 120.0
T_PEAK_S = 70.0
SLICE_S = 10.0
SPEED = 10.0  # the replay speed: one 10 s slice a second
WINDOWS = {"window_lengths": "[10, 40]", "window_periods": "[5, 20]"}
MAX_OFFSET_ARCMIN = 20.0
MAX_LATENCY_S = 30.0  # after the peak's slice lands, at 10x on 2 cores
OBS_ID = "0000000018"
STRAY_OBS_ID = "0000000077"
CRAB = (83.633, 22.014)
ROOT = Path(__file__).resolve().parents[1]
SLICE_CODER = PickleCoder()


def off_axis(pointing, dy_deg: float, dz_deg: float):
    quaternion = instrument.quaternion_from_pointing(pointing.ra, pointing.dec, pointing.roll)
    los = np.array([1.0, np.tan(np.radians(dy_deg)), np.tan(np.radians(dz_deg))])
    ra, dec = instrument.los_to_radec(los / np.linalg.norm(los), quaternion)
    return float(ra), float(dec)


def stream_scenario(with_burst: bool, name: str, obs_id: str = OBS_ID, **changes):
    base = default_scenario()
    ra, dec = off_axis(base.resolved_pointings()[0], 4.0, -3.0)
    grbs = [dict(name="GRB_stream", ra=ra, dec=dec, t_peak=T_PEAK_S, peak_flux=3.0, rise=1.0,
                 decay=8.0)] if with_burst else []
    return scenario_with(base, name=name, obs_id=obs_id, seed=18, duration=DURATION_S,
                         sources=[], grbs=grbs, **changes)


def crab_scenario():
    """120 s of the shipped Crab scenario (ECL-SRC-CAT's Crab, steady, no Earth in the way),
    pointed 5 deg away so that its position in each window scatters off axis."""
    base = load_scenario(ROOT / "ecpi_beam" / "simu" / "scenarios" / "crab_onaxis.toml")
    return scenario_with(base, name="stream_crab", obs_id="0000000019", seed=19,
                         duration=DURATION_S,
                         pointings=[dict(ra=CRAB[0] + 5.0, dec=CRAB[1], roll=0.0, start=0.0)])


def stray_scenario():
    """One 10 s slice of another observation, 3000 s before the burst stream, with a bright
    burst: it must be processed on its own (its alert under its own OBS_ID, once)."""
    base = default_scenario()
    pointing = base.resolved_pointings()[0]
    ra, dec = off_axis(pointing, -6.0, 2.0)
    return scenario_with(base, name="stream_stray", obs_id=STRAY_OBS_ID, seed=77,
                         tstart=base.tstart - 3000.0, duration=SLICE_S, sources=[],
                         pointings=[dict(ra=pointing.ra, dec=pointing.dec, roll=pointing.roll,
                                         start=0.0)],
                         grbs=[dict(name="GRB_stray", ra=ra, dec=dec, t_peak=4.0,
                                    peak_flux=10.0, rise=0.5, decay=3.0)])


def drip_at_once(scenario, directory, **options):
    """All the slices of a scenario written without waiting; returns the simulator's Truth."""
    return drip(scenario, str(directory), Caldb.open(default_caldb_dir()), speed=1e9,
                slice_seconds=SLICE_S, sleep=lambda seconds: None, **options)


def burst_of(truth):
    return next(source for source in truth.sources if source["kind"] == "grb")


def read_alerts(working_out):
    folder = Path(working_out) / "alerts"
    alerts = []
    for path in sorted(folder.glob("*.xml")) if folder.exists() else []:
        with open(path, "rb") as stream:
            event = voeventparse.load(stream)
        assert voeventparse.valid_as_v2_0(event)
        params = voeventparse.get_toplevel_params(event)
        window = voeventparse.get_grouped_params(event)["Time_Window"]
        position = voeventparse.get_event_position(event)
        alerts.append(dict(event_id=params["Event_ID"]["value"],
                           sequence=int(params["Sequence"]["value"]),
                           obs_id=params["Event_ID"]["value"].split("_")[0],
                           ra=position.ra, dec=position.dec,
                           window_start=float(window["Window_Start"]["value"]),
                           window_length=float(window["Window_Length"]["value"]),
                           path=path, written=path.stat().st_mtime))
    return alerts


def assert_one_alert_on_the_burst(alerts, truth, t_peak_s=T_PEAK_S):
    """The alerts of the burst's observation: one first alert (then only its updates), all
    within 20' of the burst, the first from a window holding its rise or peak."""
    first = [alert for alert in alerts if alert["sequence"] == 0]
    assert len(first) == 1, alerts
    assert {alert["event_id"] for alert in alerts} == {first[0]["event_id"]}
    burst = burst_of(truth)
    for alert in alerts:
        offset = 60 * float(angular_separation_deg(alert["ra"], alert["dec"], burst["ra"],
                                                   burst["dec"]))
        assert offset < MAX_OFFSET_ARCMIN, alert
    peak = truth.tstart + t_peak_s
    start, length = first[0]["window_start"], first[0]["window_length"]
    assert start - 1.0 <= peak < start + length + 1.0, first[0]
    return first[0]


def stream_params_file(path: Path, watched: Path, out: Path, **stream) -> Path:
    path.write_text(params_text(str(watched), str(out), default_caldb_dir(),
                                logger_level="info", extra={"stream": {**WINDOWS, **stream}}))
    return path


@dataclass
class LiveRun:
    returncode: int
    stdout: str
    stderr: list  # (wall time, line)
    landed: dict  # (obs_id, seq, kind) -> wall time the file landed
    alerts: list
    out: Path
    truth: object

    def stderr_text(self) -> str:
        return "\n".join(line for _, line in self.stderr)

    def failures(self) -> list[dict]:
        path = self.out / "failures.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() \
            else []

    def first_error_with(self, text: str):
        """(wall time, line) of the first `error: ...` line of stderr holding `text`."""
        return next(((when, line) for when, line in self.stderr
                     if line.startswith("error: ") and text in line), None)


@dataclass
class LiveStream:
    """`ecpi_run params.ini --streaming` on a watched folder while a scenario is dripped in."""

    root: Path
    runner_args: tuple = ()
    idle_timeout: float = 20.0
    ready_timeout: float = 240.0
    stream_keys: dict = field(default_factory=dict)

    def run(self, scenario, *, truncate=(), on_slice=None, started=None) -> LiveRun:
        """Drip `scenario` once the stream has started: its watch's first log line, or
        `started()` true (for workers whose log is not ecpi_run's)."""
        watched, out = self.root / "in", self.root / "out"
        watched.mkdir(parents=True, exist_ok=True)
        out.mkdir(exist_ok=True)
        params = stream_params_file(self.root / "params.ini", watched, out, **self.stream_keys)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), os.environ.get("PYTHONPATH", "")])}
        runner = subprocess.Popen(
            [sys.executable, "-m", "ecpi_beam.run", str(params), "--streaming",
             "--stream_idle_timeout", str(self.idle_timeout), *self.runner_args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines, watching = [], threading.Event()

        def read_stderr():
            for line in runner.stderr:
                lines.append((time.time(), line.rstrip("\n")))
                if "STREAM watching" in line:
                    watching.set()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        landed = {}

        def landing(seq, kind, path, wall):
            landed[(scenario.obs_id, seq, kind)] = wall
            if on_slice is not None:
                on_slice(seq, kind, path, watched, landed)

        is_started = started or watching.is_set
        try:
            deadline = time.time() + self.ready_timeout
            while not is_started():
                if runner.poll() is not None or time.time() > deadline:
                    runner.kill()
                    reader.join(10)
                    raise AssertionError("the stream did not start:\n" + "\n".join(
                        line for _, line in lines[-40:]))
                time.sleep(0.5)
            truth = drip(scenario, str(watched), Caldb.open(default_caldb_dir()), speed=SPEED,
                         slice_seconds=SLICE_S, truncate=truncate, on_slice=landing)
            stdout = runner.communicate(timeout=self.idle_timeout + 300)[0]
        finally:
            if runner.poll() is None:
                runner.kill()
        reader.join(10)
        return LiveRun(runner.returncode, stdout, lines, landed, read_alerts(out), out, truth)


def place_triplet(source_dir: Path, obs_id: str, seq: int, watched: Path) -> None:
    """Copy a slice triplet into the watched folder the way a writer does (temporary name,
    then rename), attitude and orbit first."""
    for kind in ("att", "orb", "evt"):
        name = slice_name(kind, obs_id, seq)
        shutil.copy(source_dir / name, watched / (name + ".part"))
        os.replace(watched / (name + ".part"), watched / name)


@pytest.fixture(scope="session")
def dripped(tmp_path_factory):
    """{'burst': (dir, truth), 'quiet': (dir, truth)}: slices written at once (no waiting)."""
    observations = {}
    for label, with_burst in (("burst", True), ("quiet", False)):
        directory = tmp_path_factory.mktemp(f"slices_{label}")
        truth = drip_at_once(stream_scenario(with_burst, f"stream_{label}"), directory)
        observations[label] = (directory, truth)
    return observations


@pytest.fixture(scope="session")
def stray_slice(tmp_path_factory):
    """(dir, truth) of the stray observation's one slice triplet."""
    directory = tmp_path_factory.mktemp("slices_stray")
    return directory, drip_at_once(stray_scenario(), directory)


# ----------------------------------------------------------------------------------------------
# The graph on a TestStream (DirectRunner): a chosen watermark
# ----------------------------------------------------------------------------------------------
def stream_params(working_in, working_out, bkg_cor_mod=("shape",), **stream):
    return parse_params(params_text(str(working_in), str(working_out), default_caldb_dir(),
                                    bkg_cor_mod=bkg_cor_mod,
                                    extra={"stream": {**WINDOWS, **stream}}))


def replay(directory, working_out, *, late_seqs=(), late_by_s=0.0, bkg_cor_mod=("shape",),
           **stream):
    """Run the streaming graph on a TestStream of the slices of `directory`: each slice's
    element, then the watermark to its end; slices in late_seqs arrive after the watermark
    has gone late_by_s beyond them. Returns the alerts written (parsed VOEvents)."""
    params = stream_params(directory, working_out, bkg_cor_mod, **stream)
    slice_sets, _ = SliceWatcher([str(directory)]).poll()
    held = [s for s in slice_sets if s.seq in late_seqs]
    events = test_stream.TestStream(coder=SLICE_CODER)
    for slice_set in slice_sets:
        if slice_set not in held:
            events = events.add_elements([TimestampedValue(slice_set, slice_set.tstart)])
        events = events.advance_watermark_to(slice_set.tstop)
        due = [s for s in held if s.tstop + late_by_s <= slice_set.tstop]
        for late in due:
            events = events.add_elements([TimestampedValue(late, late.tstart)])
            held.remove(late)
    for late in held:  # past the end of the observation: the watermark goes on, as in a pass
        events = events.advance_watermark_to(max(late.tstop + late_by_s, slice_sets[-1].tstop))
        events = events.add_elements([TimestampedValue(late, late.tstart)])
    events = events.advance_watermark_to_infinity()
    options = PipelineOptions(["--runner", "DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as pipeline:
        build_stream_pipeline(pipeline | events, params, default_caldb_dir())
    return read_alerts(working_out)


@pytest.fixture(scope="session")
def on_time_alert(dripped, tmp_path_factory):
    directory, truth = dripped["burst"]
    alerts = replay(directory, tmp_path_factory.mktemp("out_on_time"))
    return assert_one_alert_on_the_burst(alerts, truth)


