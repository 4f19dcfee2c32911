"""Params + PipelineOptions -> the streaming graph: watched slices -> windows -> alerts.

docs/streaming.md. The graph (build_stream_pipeline) takes any unbounded PCollection of
io.slices.SliceSet whose element timestamps are the slices' TSTART and whose watermark is the
attitude/orbit coverage; `run_stream` makes it from working_in:

- on the DirectRunner, a TestStream fed, over gRPC on 127.0.0.1, by a service in this process
  that polls working_in (SliceWatcher) and sends each complete slice as an element and the
  coverage as the watermark (the DirectRunner holds the watermark of a splittable DoFn at
  -inf until it ends, so a watching DoFn would fire no window before the end of the run);
  the service ends the stream after `idle_timeout` seconds without a new slice;
- on any other runner (Flink), the splittable DoFn WatchSlices, which polls working_in, sets
  its watermark estimator to the coverage and ends after the idle timeout, then DedupeSlices.
"""
from __future__ import annotations

import logging
import socket
import sys
import time
import typing

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.test_stream_service import TestStreamServiceController
from apache_beam.transforms import userstate, window
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp

from ecpi_beam.errors import EcpiError
from ecpi_beam.io.slices import SliceWatcher
from ecpi_beam.io.failures import FailureLog, gather
from ecpi_beam.transforms.failures import with_failure_log
from ecpi_beam.transforms.windows import (ALERTS_FOLDER, SliceTiles, TransientAlerts,
                                          WindowedSearch)

LOG = logging.getLogger(__name__)
SLICE_CODER = PickleCoder()
DIRECT_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")
Event = beam_runner_api_pb2.TestStreamPayload.Event


def build_stream_pipeline(slices, params, caldb_dir: str):
    """Add the streaming search to an unbounded PCollection of SliceSets; returns the
    PCollection of alert URLs."""
    stream = params.stream
    failure_log = FailureLog(params.general.working_out)
    tiles = slices | "Tiles" >> beam.ParDo(with_failure_log(
        SliceTiles(caldb_dir, params.bube, stream.energy_channels, stream.tile_seconds),
        failure_log)).with_output_types(typing.Tuple[typing.Any, typing.Any])
    detections = []
    for length, period in zip(stream.window_lengths, stream.window_periods):
        detections.append(tiles | f"Windows{length}s" >> WindowedSearch(
            length, period, stream.allowed_lateness, caldb_dir, params, failure_log))
    return (tuple(detections) | "Detections" >> beam.Flatten()
            | "Alerts" >> TransientAlerts(params.general.working_out,
                                          max(stream.window_lengths), stream.match_radius))


def _micros(seconds: float) -> int:
    return int(round(float(seconds) * 1e6))


class SliceEvents:
    """The TestStreamService reader: polls a SliceWatcher and yields TestStream events.

    Each new slice set is an element (timestamp: its TSTART), each advance of the coverage a
    watermark event; when nothing changes a zero processing-time advance keeps the stream
    alive. The stream ends `idle_timeout` seconds after the last new slice.
    """

    def __init__(self, watcher: SliceWatcher, poll_interval: float, idle_timeout: float):
        self.watcher = watcher
        self.poll_interval = poll_interval
        self.idle_timeout = idle_timeout
        self.last_slice_wall_time = None

    def read_multiple(self, unused_tags):
        last_new = time.monotonic()
        sent_watermark = None
        while True:
            ready = self.watcher.poll()
            if ready:
                last_new = time.monotonic()
                self.last_slice_wall_time = time.time()
                LOG.info("STREAM %d new slice(s): %s", len(ready),
                         ", ".join(f"{s.obs_id}#{s.seq}" for s in ready))
                yield Event(element_event=Event.AddElements(elements=[
                    beam_runner_api_pb2.TestStreamPayload.TimestampedElement(
                        encoded_element=SLICE_CODER.encode(s), timestamp=_micros(s.tstart))
                    for s in ready]))
            watermark = self.watcher.watermark()
            if watermark is not None and (sent_watermark is None or watermark > sent_watermark):
                sent_watermark = watermark
                yield Event(watermark_event=Event.AdvanceWatermark(
                    new_watermark=_micros(watermark)))
            else:
                yield Event(processing_time_event=Event.AdvanceProcessingTime(
                    advance_duration=0))
            if time.monotonic() - last_new > self.idle_timeout:
                LOG.info("STREAM no new slice for %.0f s: end of input", self.idle_timeout)
                return
            time.sleep(self.poll_interval)


class SliceSource:
    """The watched working_in as a live TestStream (see the module docstring); a context
    manager: the gRPC service on 127.0.0.1 runs inside the `with` block."""

    def __init__(self, locations, poll_interval: float, idle_timeout: float):
        self.events = SliceEvents(SliceWatcher(locations), poll_interval, idle_timeout)
        self._service = TestStreamServiceController(self.events,
                                                    endpoint=f"127.0.0.1:{_free_port()}")

    def __enter__(self):
        self._service.start()
        return self

    def __exit__(self, *exc):
        self._service.stop()

    def transform(self) -> TestStream:
        return TestStream(coder=SLICE_CODER, endpoint=self._service.endpoint)


# ----------------------------------------------------------------------------------------------
# The portable source: a watching splittable DoFn (runners with SDF watermarks: Flink, Prism)
# ----------------------------------------------------------------------------------------------
class _PollRestrictions(RestrictionProvider):
    """One offset per poll of working_in; the restriction ends when the stream goes idle."""

    def initial_restriction(self, element):
        return OffsetRange(0, MAX_POLLS)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1

    def split(self, element, restriction):
        yield restriction  # one watcher per working_in: never split

    def truncate(self, element, restriction):
        return None  # on drain, stop watching


MAX_POLLS = 2**62


class WatchSlices(beam.DoFn):
    """working_in locations -> SliceSets (timestamp TSTART), the watermark set to the coverage.

    Each call polls once, then defers the rest of its restriction by the poll interval; it
    ends the restriction after `idle_timeout` seconds without a new slice. The watcher lives in
    the DoFn instance: a runner that resumes the restriction elsewhere starts a new watcher,
    whose repeats DedupeSlices removes.
    """

    def __init__(self, poll_interval: float, idle_timeout: float):
        self._poll_interval = poll_interval
        self._idle_timeout = idle_timeout

    def setup(self):
        self._watcher = None
        self._last_new = time.monotonic()

    @beam.DoFn.unbounded_per_element()
    def process(self, locations, tracker=beam.DoFn.RestrictionParam(_PollRestrictions()),
                estimator=beam.DoFn.WatermarkEstimatorParam(
                    ManualWatermarkEstimator.default_provider())):
        position = tracker.current_restriction().start
        if not tracker.try_claim(position):
            return
        if self._watcher is None:
            self._watcher = SliceWatcher(locations)
        ready = self._watcher.poll()
        for slice_set in ready:
            yield window.TimestampedValue(slice_set, slice_set.tstart)
        watermark = self._watcher.watermark()
        current = estimator.current_watermark()
        if watermark is not None and (current is None or Timestamp(watermark) > current):
            estimator.set_watermark(Timestamp(watermark))
        now = time.monotonic()
        if ready:
            self._last_new = now
        if now - self._last_new > self._idle_timeout:
            LOG.info("STREAM no new slice for %.0f s: end of input", self._idle_timeout)
            tracker.try_claim(MAX_POLLS - 1)  # the whole restriction done: the stream ends
            return
        tracker.defer_remainder(Duration(seconds=self._poll_interval))


class DedupeSlices(beam.DoFn):
    """(obs_id, seq) -> its SliceSet once, whatever the watcher repeats."""

    SEEN = userstate.ReadModifyWriteStateSpec("seen", PickleCoder())

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        _, slice_set = element
        if not seen.read():
            seen.write(True)
            yield slice_set


def watched_slices(pipeline, locations, poll_interval: float, idle_timeout: float):
    """The SliceSets of working_in through WatchSlices (the portable source)."""
    return (pipeline
            | "Locations" >> beam.Create([tuple(locations)])
            | "Watch" >> beam.ParDo(WatchSlices(poll_interval, idle_timeout))
            | "BySlice" >> beam.Map(lambda s: ((s.obs_id, s.seq), s)).with_output_types(
                typing.Tuple[typing.Tuple[str, int], typing.Any])
            | "Dedupe" >> beam.ParDo(DedupeSlices()))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_stream(params, beam_args, caldb_dir: str, idle_timeout: float):
    """Watch working_in and run the streaming search until `idle_timeout` s without input;
    returns the error lines of the files that were not valid slices."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(beam_args)
    options.view_as(StandardOptions).streaming = True
    stream = params.stream
    if str(options.view_as(StandardOptions).runner or "DirectRunner") not in DIRECT_RUNNERS:
        with beam.Pipeline(options=options) as pipeline:
            slices = watched_slices(pipeline, params.general.working_in, stream.poll_interval,
                                    idle_timeout)
            build_stream_pipeline(slices, params, caldb_dir)
        return []  # the watcher runs on a worker: its rejected files are in its log
    with SliceSource(params.general.working_in, stream.poll_interval, idle_timeout) as source:
        with beam.Pipeline(options=options) as pipeline:
            slices = pipeline | "WatchSlices" >> source.transform()
            build_stream_pipeline(slices, params, caldb_dir)
    return source.events.watcher.rejected


def run_streaming_command(params, beam_args, caldb_dir: str, started: float) -> int:
    """`ecpi_run params.ini --streaming [--stream_idle_timeout S]`: run, then one summary line."""
    from ecpi_beam.io import fs

    position = beam_args.index("--stream_idle_timeout")
    idle_timeout = float(beam_args[position + 1])
    beam_args = beam_args[:position] + beam_args[position + 2:]
    for location in params.general.working_in:
        if not fs.isdir(location) and "://" not in location:
            raise EcpiError(f"working_in = {location}: no such directory to watch")
    rejected = run_stream(params, beam_args, caldb_dir, idle_timeout)
    failures = gather(params.general.working_out)
    # a bad slice is skipped and the stream goes on: reported here
    for error in rejected + [failure.get("error") for failure in failures]:
        print(f"error: {error}", file=sys.stderr)
    alerts_dir = fs.join(params.general.working_out, ALERTS_FOLDER)
    names = fs.listdir(alerts_dir) if fs.exists(alerts_dir) else []
    first = sum(name.endswith("_0.xml") for name in names)
    print(f"ecpi_run --streaming: {first} alert(s) and {len(names) - first} update(s) in "
          f"{time.time() - started:.1f} s; alerts in {alerts_dir}")
    return 2 if failures or rejected else 0
