"""Reading observations: directories -> checked Observations and row-range event chunks.

Shape (STYLE.md, "Reading by ranges"): each observation directory is inspected once (headers
and the small GTI, attitude and orbit tables, checked by DPCO); its EVENTS table becomes chunk
descriptors (obs_id, evt_url, first_row, n_rows), reshuffled so that chunks spread over
workers, then each descriptor's rows are fetched by byte ranges. No step holds a whole event
file. A failing observation becomes a failure record and does not stop the others.

Each chunk travels as an `EventChunk`: its events and a `ChunkContext`, what the steps after
reading need of its observation (the good time to calibrate, the occultation classes' good time
to bin). Carried with the chunk rather than read from side inputs, so that on every runner
reading, calibration and binning run in one fused stage: the job servers of Flink and Spark
start a new stage before every step that reads a side input, which would store every event
chunk (the bulk of the data) between those steps.
"""
from __future__ import annotations

import dataclasses
import logging
import typing
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import events as event_io
from ecpi_beam.io.products import pointing_keywords
from ecpi_beam.kernels import consistency, intervals
from ecpi_beam.kernels.gti import good_time, telemetry_gti
from ecpi_beam.kernels.timeline import reference_attitude
from ecpi_beam.transforms.base import DataclassTransform
from ecpi_beam.transforms import dpco
from ecpi_beam.transforms.failures import isolating, with_failure_log

NAMESPACE = "ecpi.read"
LOG = logging.getLogger(__name__)
# primary-header keywords carried by an Observation (ICD section 2, plus optional context)
OBSERVATION_KEYWORDS = consistency.PRIMARY_KEYWORDS + ("DATE-OBS", "DATE-END", "OBJECT")
OBSERVATIONS, CHUNKS, FAILURES, CHECKS = "observations", "chunks", "failures", "checks"


class Attitude(NamedTuple):
    time: np.ndarray  # (n,) s
    qparam: np.ndarray  # (n, 4) scalar-last, LOS -> ICRS
    flag: np.ndarray  # (n,) FLAG_ATT


class Orbit(NamedTuple):
    time: np.ndarray  # (n,) s
    position: np.ndarray  # (n, 3) m, ICRS Earth-centred
    velocity: np.ndarray  # (n, 3) m/s
    flag: np.ndarray  # (n,) FLAG_PVT


@dataclasses.dataclass(frozen=True, eq=False)
class Observation:
    """One checked input triplet: everything but the events, which are read by chunks."""

    obs_id: str
    obs_dir: str
    evt_url: str
    att_url: str
    orb_url: str
    keywords: dict  # OBSERVATION_KEYWORDS of the event file's primary header, plain Python
    n_events: int
    attitude: Attitude
    orbit: Orbit
    telemetry_gti: np.ndarray  # (n, 2) the event file's GTI extension, sorted and merged


class ChunkContext(NamedTuple):
    """What the steps after reading need of a chunk's observation."""

    good: np.ndarray  # (n, 2) the observation's good time (kernels.gti 'ALL'): calibration
    # per stable pointing, occ -> (n, 2) good time of each occultation class: binning
    class_gti: tuple | None = None


class EventChunk(NamedTuple):
    """A chunk of an observation's events (EVENT_DTYPE, or CALIBRATED_DTYPE once calibrated)
    and its observation's ChunkContext."""

    events: np.ndarray
    context: ChunkContext


def chunk_events(chunk) -> np.ndarray:
    """The events of an EventChunk (or of a bare events array)."""
    return chunk.events if isinstance(chunk, EventChunk) else chunk


class ChunkDescriptor(NamedTuple):
    """Rows [first_row, first_row + n_rows) of an observation's EVENTS table."""

    obs_id: str
    evt_url: str
    first_row: int
    n_rows: int
    tstart: float = float("-inf")  # the observation's TSTART and TSTOP: DPCO's time checks
    tstop: float = float("inf")
    context: ChunkContext | None = None


def _plain(value):
    """Header values as plain Python types (numpy scalars make poor keys and pickles)."""
    return value.item() if isinstance(value, np.generic) else value


def inspect_observation(obs_dir) -> Observation:
    """Find, check (DPCO, header level) and load the small parts of one observation.

    Raises EcpiError '<obs_dir>: DPCO found N problems: ...' listing every problem found.
    """
    triplet = dpco.discover_triplet(obs_dir)
    contents = dpco.read_triplet(triplet)
    problems = dpco.check_triplet(contents)
    if problems:
        raise EcpiError(consistency.dpco_error_message(obs_dir, problems))
    evt = contents.summaries["evt"]
    primary = evt.primary
    attitude, _ = contents.tables["ATTITUDE"]
    orbit, _ = contents.tables["ORBIT"]
    gti, _ = contents.tables["GTI"]
    observation = Observation(
        obs_id=str(primary["OBS_ID"]).strip(), obs_dir=obs_dir,
        evt_url=triplet.evt, att_url=triplet.att, orb_url=triplet.orb,
        keywords={key: _plain(primary[key]) for key in OBSERVATION_KEYWORDS if key in primary},
        n_events=int(evt.extension_keywords["EVENTS"]["NAXIS2"]),
        attitude=Attitude(attitude["TIME"], attitude["QPARAM"].reshape(-1, 4),
                          attitude["FLAG_ATT"]),
        orbit=Orbit(orbit["TIME"], orbit["POSITION"].reshape(-1, 3),
                    orbit["VELOCITY"].reshape(-1, 3), orbit["FLAG_PVT"]),
        telemetry_gti=telemetry_gti(gti["START"], gti["STOP"]))
    return with_pointing_keywords(observation)


def with_pointing_keywords(observation: Observation) -> Observation:
    """RA_PNT, DEC_PNT, PA_PNT of the reference attitude (kernels/timeline.py's, over the good
    time) added to the keywords every product carries; none when no attitude is good."""
    attitude = observation.attitude
    in_good = intervals.mask_times(attitude.time, good_time(observation)["ALL"])
    if not np.any(in_good):
        return observation
    reference = reference_attitude(attitude.qparam[in_good])
    return dataclasses.replace(observation, keywords={
        **observation.keywords, **pointing_keywords(reference)})


def chunk_descriptors(observation: Observation, chunk_size: int, timeline=None):
    """The ChunkDescriptors covering an observation's EVENTS rows, with its ChunkContext
    (each stable pointing's occultation classes when its imaging `timeline` is given)."""
    context = ChunkContext(good_time(observation)["ALL"],
                           None if timeline is None else timeline.class_gti_by_pointing())
    keywords = observation.keywords
    return [ChunkDescriptor(observation.obs_id, observation.evt_url, first, n,
                            float(keywords["TSTART"]), float(keywords["TSTOP"]), context)
            for first, n in event_io.chunk_ranges(observation.n_events, chunk_size)]


def read_event_chunk(descriptor: ChunkDescriptor, layout=None,
                     lookback: int = consistency.DUPLICATE_LOOKBACK_ROWS):
    """(events, the up to `lookback` rows before the chunk): one byte-range read. The rows
    before let DPCO check TIME order and duplicates across the chunk boundary."""
    previous = min(lookback, descriptor.first_row)
    rows = event_io.read_rows(descriptor.evt_url, descriptor.first_row - previous,
                              descriptor.n_rows + previous, layout)
    return rows[previous:], rows[:previous]


class InspectObservation(beam.DoFn):
    """obs_dir -> (obs_id, Observation); failures to the 'failures' output as {obs_dir, error}."""

    def __init__(self):
        self._inspected = Metrics.counter(NAMESPACE, "observations")
        self._failed = Metrics.counter(NAMESPACE, "observations_failed")

    def process(self, obs_dir):
        try:
            observation = inspect_observation(obs_dir)
        except Exception as err:  # noqa: BLE001 - any fault of one observation stops no other
            message = str(err) if isinstance(err, EcpiError) else (
                f"{obs_dir}: DPCO failed: {type(err).__name__}: {' '.join(str(err).split())}")
            self._failed.inc()
            LOG.info("DPCO %s", message)  # reported once, as an error: line, after the run
            yield FAILURES, {"obs_dir": obs_dir, "obs_id": None, "error": message}
            return
        self._inspected.inc()
        LOG.info("DPCO %s: triplet consistent (OBS_ID %s, %d events)", obs_dir,
                 observation.obs_id, observation.n_events)
        yield OBSERVATIONS, (observation.obs_id, observation)


class ReadEventChunk(beam.DoFn):
    """ChunkDescriptor -> (obs_id, EventChunk of EVENT_DTYPE rows), and its DPCO EventCheck to
    'checks'.

    A chunk with DPCO problems is not passed on (its bad rows would fail calibration); the
    observation then fails as a whole in dpco.SummarizeEventChecks.
    """

    def __init__(self):
        self._chunks = Metrics.counter(NAMESPACE, "chunks")
        self._events = Metrics.counter(NAMESPACE, "events")
        self._bytes = Metrics.counter(NAMESPACE, "bytes")
        self._bad_chunks = Metrics.counter(NAMESPACE, "chunks_failing_dpco")
        self._chunk_events = Metrics.distribution(NAMESPACE, "chunk_events")

    def setup(self):
        self._layouts = {}  # evt_url -> TableLayout: the header walk is done once per file

    @isolating("read")
    def process(self, descriptor: ChunkDescriptor):
        layout = self._layouts.get(descriptor.evt_url)
        if layout is None:
            layout = self._layouts[descriptor.evt_url] = event_io.table_layout(
                descriptor.evt_url, "EVENTS")
        events, rows_before = read_event_chunk(descriptor, layout)
        self._chunks.inc()
        self._events.inc(len(events))
        self._bytes.inc(descriptor.n_rows * layout.row_bytes)
        self._chunk_events.update(len(events))
        LOG.debug("READ %s: rows %d..%d", descriptor.obs_id, descriptor.first_row,
                  descriptor.first_row + descriptor.n_rows - 1)
        check = consistency.check_event_chunk(
            events, descriptor.first_row,
            float(rows_before["TIME"][-1]) if len(rows_before) else None,
            descriptor.tstart, descriptor.tstop, previous_rows=rows_before)
        yield CHECKS, (descriptor.obs_id, check)
        if any(kind != "duplicate" for kind in check.findings):  # rows calibration cannot take
            self._bad_chunks.inc()
            return
        yield CHUNKS, (descriptor.obs_id, EventChunk(events, descriptor.context))


class ReadResult(NamedTuple):
    observations: beam.PCollection  # (obs_id, Observation), header-level DPCO passed
    chunks: beam.PCollection  # (obs_id, EventChunk of EVENT_DTYPE rows)
    failures: beam.PCollection  # {obs_dir, obs_id (None if unknown), error}
    timelines: beam.PCollection | None = None  # (obs_id, ImagingTimeline), when asked for


@dataclasses.dataclass(eq=False)
class ReadObservation(DataclassTransform):
    """Observation directory URLs -> ReadResult(observations, chunks, failures, timelines).

    An observation whose EVENTS rows fail DPCO appears in `failures` once all its chunks are
    read; writers of products skip the obs_ids listed there. With `timelines` (a transform
    (obs_id, Observation) -> (obs_id, ImagingTimeline), for binning), the chunks carry the
    occultation classes' good time and the result holds the timelines.
    """

    chunk_size: int = 1_000_000
    failure_log: object = None  # failures.FailureLog: isolate a failing chunk's observation
    timelines: beam.PTransform | None = None

    def expand(self, obs_dirs):
        inspected = split_outputs(
            obs_dirs | "Inspect" >> beam.ParDo(InspectObservation()).with_output_types(
                typing.Tuple[str, typing.Any]), "Inspect",
            OBSERVATIONS, FAILURES)
        observations = inspected[OBSERVATIONS]
        # The per-observation side input is read here, before the reshuffle, where the data
        # are descriptors: the chunks' steps read none (see the module's docstring).
        timelines = None if self.timelines is None else (
            observations | "Timelines" >> self.timelines)
        side = [] if timelines is None else [beam.pvalue.AsDict(timelines)]
        read = (observations
                | "ChunkDescriptors" >> beam.FlatMap(describe_chunks, self.chunk_size, *side)
                | "Reshuffle" >> beam.Reshuffle()
                | "ReadChunks" >> beam.ParDo(with_failure_log(ReadEventChunk(),
                                                              self.failure_log))
                .with_output_types(typing.Tuple[str, typing.Any]))
        read = split_outputs(read, "ReadChunks", CHUNKS, CHECKS)
        event_failures = read[CHECKS] | "Dpco" >> dpco.SummarizeEventChecks(observations)
        failures = (inspected[FAILURES], event_failures) | "Failures" >> beam.Flatten()
        return ReadResult(observations, read[CHUNKS], failures, timelines)


def describe_chunks(keyed, chunk_size: int, timelines=None):
    """(obs_id, Observation) -> its ChunkDescriptors; with `timelines` ({obs_id: timeline}),
    the occultation classes in their context (none when the observation has no timeline: its
    timeline's failure is recorded, and its chunks' binning fails)."""
    obs_id, observation = keyed
    timeline = None if timelines is None else timelines.get(obs_id)
    return chunk_descriptors(observation, chunk_size, timeline)


def split_outputs(tagged, label, *tags):
    """(tag, value) pairs -> {tag: PCollection of values}. Used instead of with_outputs, which
    Beam 2.77's DaskRunner does not separate (every consumer would get every output)."""
    return {tag: tagged | f"{label}{tag.capitalize()}" >> beam.FlatMap(
        lambda item, wanted: [item[1]] if item[0] == wanted else [], tag
    ).with_output_types(typing.Any) for tag in tags}
