"""Params + PipelineOptions -> the streaming graph: watched slices -> windows -> alerts.

docs/streaming.md. The graph (build_stream_pipeline) takes any unbounded PCollection of
io.slices.SliceSet whose element timestamps are the slices' TSTART and whose watermark is the
attitude/orbit coverage; `slice_source` makes it from working_in:

- on the DirectRunner, a TestStream fed, over gRPC on 127.0.0.1, by a service in this process
  that polls working_in (SliceWatcher) and sends each complete slice as an element and the
  coverage as the watermark (the DirectRunner holds the watermark of a splittable DoFn at
  -inf until it ends, so a watching DoFn would fire no window before the end of the run);
  the service ends the stream after `idle_timeout` seconds without a new slice.
"""
from __future__ import annotations

import logging
import socket
import time
import typing

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.test_stream_service import TestStreamServiceController

from ecpi_beam.errors import EcpiError
from ecpi_beam.io.slices import SliceWatcher
from ecpi_beam.transforms.failures import FailureLog
from ecpi_beam.transforms.windows import (ALERTS_FOLDER, SliceTiles, TransientAlerts,
                                          WindowedSearch)

LOG = logging.getLogger(__name__)
SLICE_CODER = PickleCoder()
Event = beam_runner_api_pb2.TestStreamPayload.Event


def build_stream_pipeline(slices, params, caldb_dir: str):
    """Add the streaming search to an unbounded PCollection of SliceSets; returns the
    PCollection of alert URLs."""
    stream = params.stream
    failure_log = FailureLog(params.general.working_out)
    tiles = slices | "Tiles" >> beam.ParDo(
        SliceTiles(caldb_dir, params.bube, stream.energy_channels, stream.tile_seconds)
    ).with_output_types(typing.Tuple[typing.Any, typing.Any])
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_stream(params, beam_args, caldb_dir: str, idle_timeout: float):
    """Watch working_in and run the streaming search until `idle_timeout` s without input."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(beam_args)
    options.view_as(StandardOptions).streaming = True
    with SliceSource(params.general.working_in, params.stream.poll_interval,
                     idle_timeout) as source:
        with beam.Pipeline(options=options) as pipeline:
            slices = pipeline | "WatchSlices" >> source.transform()
            build_stream_pipeline(slices, params, caldb_dir)
    return pipeline.result if hasattr(pipeline, "result") else None


def run_streaming_command(params, beam_args, caldb_dir: str, started: float) -> int:
    """`ecpi_run params.ini --streaming [--stream_idle_timeout S]`: run, then one summary line."""
    from ecpi_beam.io import fs

    position = beam_args.index("--stream_idle_timeout")
    idle_timeout = float(beam_args[position + 1])
    beam_args = beam_args[:position] + beam_args[position + 2:]
    for location in params.general.working_in:
        if not fs.isdir(location) and "://" not in location:
            raise EcpiError(f"working_in = {location}: no such directory to watch")
    run_stream(params, beam_args, caldb_dir, idle_timeout)
    alerts_dir = fs.join(params.general.working_out, ALERTS_FOLDER)
    names = fs.listdir(alerts_dir) if fs.exists(alerts_dir) else []
    first = sum(name.endswith("_0.xml") for name in names)
    print(f"ecpi_run --streaming: {first} alert(s) and {len(names) - first} update(s) in "
          f"{time.time() - started:.1f} s; alerts in {alerts_dir}")
    return 0
