"""Reading observations: directories -> checked Observations and row-range event chunks.

Shape (STYLE.md, "Reading by ranges"): each observation directory is inspected once (headers
and the small GTI, attitude and orbit tables, checked by DPCO); its EVENTS table becomes chunk
descriptors (obs_id, evt_url, first_row, n_rows), reshuffled so that chunks spread over
workers, then each descriptor's rows are fetched by byte ranges. No step holds a whole event
file. A failing observation becomes a failure record and does not stop the others.
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


class ChunkDescriptor(NamedTuple):
    """Rows [first_row, first_row + n_rows) of an observation's EVENTS table."""

    obs_id: str
    evt_url: str
    first_row: int
    n_rows: int


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


def chunk_descriptors(observation: Observation, chunk_size: int):
    """The ChunkDescriptors covering an observation's EVENTS rows."""
    return [ChunkDescriptor(observation.obs_id, observation.evt_url, first, n)
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
    """ChunkDescriptor -> (obs_id, EVENT_DTYPE array), and its DPCO EventCheck to 'checks'.

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
    def process(self, descriptor: ChunkDescriptor, observations):
        observation = observations[descriptor.obs_id]
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
            float(observation.keywords["TSTART"]), float(observation.keywords["TSTOP"]),
            previous_rows=rows_before)
        yield CHECKS, (descriptor.obs_id, check)
        if any(kind != "duplicate" for kind in check.findings):  # rows calibration cannot take
            self._bad_chunks.inc()
            return
        yield CHUNKS, (descriptor.obs_id, events)


class ReadResult(NamedTuple):
    observations: beam.PCollection  # (obs_id, Observation), header-level DPCO passed
    chunks: beam.PCollection  # (obs_id, EVENT_DTYPE array)
    failures: beam.PCollection  # {obs_dir, obs_id (None if unknown), error}


@dataclasses.dataclass(eq=False)
class ReadObservation(DataclassTransform):
    """Observation directory URLs -> ReadResult(observations, chunks, failures).

    An observation whose EVENTS rows fail DPCO appears in `failures` once all its chunks are
    read; writers of products skip the obs_ids listed there.
    """

    chunk_size: int = 1_000_000
    failure_log: object = None  # failures.FailureLog: isolate a failing chunk's observation

    def expand(self, obs_dirs):
        inspected = split_outputs(
            obs_dirs | "Inspect" >> beam.ParDo(InspectObservation()).with_output_types(
                typing.Tuple[str, typing.Any]), "Inspect",
            OBSERVATIONS, FAILURES)
        observations = inspected[OBSERVATIONS]
        read = (observations
                | "ChunkDescriptors" >> beam.FlatMap(
                    lambda keyed, size: chunk_descriptors(keyed[1], size), self.chunk_size)
                | "Reshuffle" >> beam.Reshuffle()
                | "ReadChunks" >> beam.ParDo(
                    with_failure_log(ReadEventChunk(), self.failure_log),
                    beam.pvalue.AsDict(observations))
                .with_output_types(typing.Tuple[str, typing.Any]))
        read = split_outputs(read, "ReadChunks", CHUNKS, CHECKS)
        event_failures = read[CHECKS] | "Dpco" >> dpco.SummarizeEventChecks(observations)
        failures = (inspected[FAILURES], event_failures) | "Failures" >> beam.Flatten()
        return ReadResult(observations, read[CHUNKS], failures)


def split_outputs(tagged, label, *tags):
    """(tag, value) pairs -> {tag: PCollection of values}. Used instead of with_outputs, which
    Beam 2.77's DaskRunner does not separate (every consumer would get every output)."""
    return {tag: tagged | f"{label}{tag.capitalize()}" >> beam.FlatMap(
        lambda item, wanted: [item[1]] if item[0] == wanted else [], tag
    ).with_output_types(typing.Any) for tag in tags}
