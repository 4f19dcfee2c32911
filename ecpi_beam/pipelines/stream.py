"""Params + PipelineOptions -> the streaming graph: watched slices -> windows -> alerts.

docs/streaming.md. `build_stream_pipeline` takes an unbounded PCollection of io.slices.SliceSet
whose element timestamps are the slices' TSTART (on the stream's clock) and whose watermark is
the observations' attitude/orbit coverage; `watched_slices` makes it from working_in with
`WatchSlices`, a splittable DoFn that polls working_in, carries the watch (io.slices.
SliceWatcher) from poll to poll as its restriction and sets its watermark estimator from it.
The same graph runs on every runner whose watermark comes from the source: Beam's Prism
runner locally (the default: `--runner DirectRunner --streaming` runs on Prism, whose binary
`make setup` builds), Flink on a cluster.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms import window
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs
from ecpi_beam.io.failures import (FailureLog, gather, read_dead_letters, unique_records,
                                   write_records)
from ecpi_beam.io.slices import SliceWatcher, WatchSettings
from ecpi_beam.pipelines.metrics import metric_totals
from ecpi_beam.transforms.failures import with_failure_log
from ecpi_beam.transforms.windows import (ALERTS_FOLDER, TILE_TYPE, SliceTiles,
                                          TransientAlerts, WindowedSearch)

LOG = logging.getLogger(__name__)
DIRECT_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")
# Beam's Prism runner, built from the Go module proxy at set-up (Makefile `prism`): the
# release whose job service Python apache-beam 2.77 was measured against (docs/streaming.md)
PRISM_VERSION = "2.73.0"
PRISM_ENV = "ECPI_PRISM"


def build_stream_pipeline(slices, params, caldb_dir: str):
    """Add the streaming search to an unbounded PCollection of SliceSets; returns the
    PCollection of alert URLs."""
    stream = params.stream
    failure_log = FailureLog(params.general.working_out)
    tiles = slices | "Tiles" >> beam.ParDo(with_failure_log(
        SliceTiles(caldb_dir, params.bube, stream.energy_channels, stream.tile_seconds),
        failure_log)).with_output_types(TILE_TYPE)
    detections = []
    for length, period in zip(stream.window_lengths, stream.window_periods):
        detections.append(tiles | f"Windows{length}s" >> WindowedSearch(
            length, period, stream.allowed_lateness, caldb_dir, params, failure_log))
    return (tuple(detections) | "Detections" >> beam.Flatten()
            | "Alerts" >> TransientAlerts(params.general.working_out,
                                          max(stream.window_lengths), stream.match_radius))


# ----------------------------------------------------------------------------------------------
# The source: a watching splittable DoFn whose restriction is the watch itself
# ----------------------------------------------------------------------------------------------
class WatchTracker(RestrictionTracker):
    """Tracks one SliceWatcher: every poll may go on until the DoFn checkpoints (defers the
    rest) or stops. A checkpoint's primary is a finished watch, its residual the watcher as
    it stands, so a runner resumes the watch exactly where it was, on any worker. Runner-
    initiated splits are refused: one watcher per working_in."""

    def __init__(self, watcher: SliceWatcher):
        self._watcher = watcher
        self._stopped = watcher.finished

    def current_restriction(self):
        return self._watcher

    def try_claim(self, position) -> bool:
        return not self._stopped

    def try_split(self, fraction_of_remainder):
        if self._stopped or fraction_of_remainder > 0:
            return None
        self._stopped = True
        return SliceWatcher.finished_watch(self._watcher.locations), self._watcher

    def check_done(self):
        pass  # a watch is done whenever it stops: nothing is left unclaimed

    def current_progress(self):
        return RestrictionProgress(completed=0.0, remaining=1.0)

    def is_bounded(self):
        return False


class WatchSlices(beam.DoFn, RestrictionProvider):
    """working_in locations -> SliceSets (timestamp: TSTART on the stream's clock), the
    watermark estimator set to the watch's watermark (io.slices.SliceWatcher).

    Each call polls once and defers the rest by the poll interval; the watch ends after
    `idle_timeout` seconds without a new file. Bad files are recorded as they land
    (transforms/failures.py) and skipped. Prism re-runs a deferred restriction at once rather
    than after the requested delay (docs/streaming.md, "Runners"), so the call itself waits
    for the next poll time, which the watch carries."""

    def __init__(self, settings: WatchSettings, poll_interval: float, idle_timeout: float,
                 working_out: str | None = None):
        self._settings = settings
        self._poll_interval = float(poll_interval)
        self._idle_timeout = float(idle_timeout)
        self._working_out = working_out
        self._failure_log = FailureLog(working_out) if working_out else None

    # RestrictionProvider: the restriction is the watch
    def initial_restriction(self, locations):
        return SliceWatcher(locations, self._settings)

    def create_tracker(self, restriction):
        return WatchTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1

    def split(self, element, restriction):
        yield restriction

    def truncate(self, element, restriction):
        return None  # on drain, stop watching

    @beam.DoFn.unbounded_per_element()
    def process(self, locations, tracker=beam.DoFn.RestrictionParam(),
                estimator=beam.DoFn.WatermarkEstimatorParam(
                    ManualWatermarkEstimator.default_provider())):
        watcher = tracker.current_restriction()
        if tracker.try_claim(watcher):
            yield from self._poll(watcher, tracker, estimator)

    def _poll(self, watcher, tracker, estimator):
        wait = min(watcher.next_poll_wall - time.time(), self._poll_interval)
        if wait > 0:
            time.sleep(wait)
        now = time.time()
        before = watcher.watermark
        ready, faults = watcher.poll(now)
        watcher.next_poll_wall = now + self._poll_interval
        if self._working_out and (watcher.polls == 1 or ready or faults
                                  or watcher.watermark != before):
            write_status(self._working_out, watcher.status(now))
        for fault in faults:  # ecpi_run prints the record (FailureReporter): here, the log only
            LOG.info("STREAM skipped %s", fault.line)
            if self._failure_log is not None:
                self._failure_log.record_slice(fault.obs_id, fault.seq, fault.url, fault.reason)
        if ready:
            LOG.info("STREAM %d new slice(s): %s", len(ready),
                     ", ".join(f"{s.obs_id}#{s.seq}" for s in ready))
        for slice_set in ready:
            yield window.TimestampedValue(slice_set, slice_set.stream_start)
        if watcher.watermark is not None:
            current = estimator.current_watermark()
            if current is None or Timestamp(watcher.watermark) > current:
                estimator.set_watermark(Timestamp(watcher.watermark))
        if watcher.idle_for(now) > self._idle_timeout:
            # not deferred: the watch is done, the watermark goes to the end of time
            LOG.info("STREAM no new slice for %.0f s: end of input", self._idle_timeout)
        else:
            tracker.defer_remainder(Duration(seconds=self._poll_interval))


STATUS_FILE = "stream-status.json"


def write_status(working_out: str, status: dict) -> None:
    """<working_out>/stream-status.json: where the watch stands, replaced whenever it moves
    (a slice, a bad file, the watermark): for whoever watches the stream."""
    fs.put_atomic((json.dumps(status, indent=1) + "\n").encode(),
                  fs.inside(working_out, STATUS_FILE), durable=False)


def watch_settings(stream_params) -> WatchSettings:
    return WatchSettings(
        idle_after=stream_params.idle_after, idle_after_event=stream_params.idle_after_event,
        allowed_lateness=stream_params.allowed_lateness,
        longest_window=float(max(stream_params.window_lengths)),
        clock_step=float(stream_params.clock_step))


def watched_slices(pipeline, params, idle_timeout: float):
    """The SliceSets of working_in, through WatchSlices."""
    stream = params.stream
    watch = WatchSlices(watch_settings(stream), stream.poll_interval, idle_timeout,
                        params.general.working_out)
    return (pipeline
            | "Locations" >> beam.Create([tuple(params.general.working_in)])
            | "WatchSlices" >> beam.ParDo(watch))


# ----------------------------------------------------------------------------------------------
# Runners
# ----------------------------------------------------------------------------------------------
def prism_binary() -> str:
    """The Prism runner that `make setup` built: $ECPI_PRISM, or the per-user cache."""
    if os.environ.get(PRISM_ENV):
        return os.environ[PRISM_ENV]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "ecpi-beam", f"prism-{PRISM_VERSION}", "prism")


def streaming_options(beam_args):
    """PipelineOptions for --streaming. The DirectRunner (the default) streams on Beam's Prism
    runner, whose watermark comes from the source: the binary is never downloaded at run
    time (Beam's PrismRunner would), it is `--prism_location` or prism_binary()."""
    from apache_beam.options.pipeline_options import (DebugOptions, PipelineOptions,
                                                      PrismRunnerOptions, StandardOptions)

    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    standard.streaming = True
    runner = str(standard.runner or "DirectRunner")
    if runner in DIRECT_RUNNERS:
        standard.runner = runner = "PrismRunner"
    if runner == "PrismRunner":
        prism = options.view_as(PrismRunnerOptions)
        if not prism.prism_location:
            prism.prism_location = prism_binary()
        # Beam shares one Prism job server per process, made with the options of the first
        # pipeline that asked for it (the DirectRunner asks for one, without a location, for
        # any batch pipeline it may hand to Prism): ours is made with ours
        debug = options.view_as(DebugOptions)
        if not debug.lookup_experiment("disable_prism_server_singleton"):
            debug.add_experiment("disable_prism_server_singleton")
        if "://" not in prism.prism_location and not os.access(prism.prism_location, os.X_OK):
            raise EcpiError(f"--streaming runs on Beam's Prism runner: no Prism program at "
                            f"{prism.prism_location}; build it with `make prism` (Go), or give "
                            f"--prism_location PATH or {PRISM_ENV}=PATH")
    return options


class FailureReporter:
    """While the stream runs: each failure record (a skipped slice, a failed window) is
    printed on stderr as it lands and failures.jsonl is kept up to date; a context manager
    (a thread polling <working_out>/.ecpi-failures/, which every runner's workers write)."""

    def __init__(self, working_out: str, interval: float = 0.5):
        self.working_out = working_out
        self.interval = interval
        self.records: list[dict] = []
        self._names: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ecpi-failures", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.check()

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as error:  # noqa: BLE001 - a report must never stop the stream
                LOG.warning("STREAM cannot read the failure records: %s", error)

    def check(self) -> None:
        new = read_dead_letters(self.working_out, skip=self._names)
        for name, record in new:
            self._names.add(name)
            print(f"error: {record.get('error')}", file=sys.stderr, flush=True)
            self.records.append(record)
        if new:
            write_records(self.working_out, unique_records(self.records))


def run_stream(params, beam_args, caldb_dir: str, idle_timeout: float) -> dict:
    """Watch working_in and run the streaming search until `idle_timeout` s without input;
    returns the metric totals (pipelines/metrics.py) where the runner reports them."""
    options = streaming_options(beam_args)
    with beam.Pipeline(options=options) as pipeline:
        build_stream_pipeline(watched_slices(pipeline, params, idle_timeout), params, caldb_dir)
    result = getattr(pipeline, "result", None)
    return metric_totals(result) if result is not None else {}


def run_streaming_command(params, beam_args, caldb_dir: str, started: float) -> int:
    """`ecpi_run params.ini --streaming [--stream_idle_timeout S]`: run, then one summary line;
    exit code 2 when a slice was skipped or a window failed."""
    position = beam_args.index("--stream_idle_timeout")
    idle_timeout = float(beam_args[position + 1])
    beam_args = beam_args[:position] + beam_args[position + 2:]
    for location in params.general.working_in:
        if not fs.isdir(location) and "://" not in location:
            raise EcpiError(f"working_in = {location}: no such directory to watch")
    working_out = params.general.working_out
    # failures.jsonl and the dead letters of an earlier run are gone already (safeguards)
    if fs.exists(fs.inside(working_out, STATUS_FILE)):
        fs.remove(fs.inside(working_out, STATUS_FILE))
    with FailureReporter(working_out) as reporter:
        totals = run_stream(params, beam_args, caldb_dir, idle_timeout)
    failures = gather(working_out)
    printed = {(r.get("obs_id"), r.get("stage"), r.get("file")) for r in reporter.records}
    for failure in failures:
        if (failure.get("obs_id"), failure.get("stage"), failure.get("file")) not in printed:
            print(f"error: {failure.get('error')}", file=sys.stderr)
    skipped = {(f.get("obs_id"), f.get("slice")) for f in failures if "slice" in f}
    alerts_dir = fs.join(working_out, ALERTS_FOLDER)
    names = fs.listdir(alerts_dir) if fs.exists(alerts_dir) else []
    first = sum(name.endswith("_0.xml") for name in names)
    imaged = (f"slices {int(totals.get('ecpi.stream.slices', 0))}, windows imaged "
              f"{int(totals.get('ecpi.stream.windows_imaged', 0))}, known sources seen "
              f"{int(totals.get('ecpi.stream.known_sources_seen', 0))}; " if totals else "")
    print(f"ecpi_run --streaming: {first} alert(s), {len(names) - first} update(s), "
          f"{len(skipped)} slice(s) skipped in {time.time() - started:.1f} s; {imaged}"
          f"alerts in {alerts_dir}")
    return 2 if failures else 0
