"""DPCO: find an observation's input triplet and check its consistency (ICD section 2).

Two levels, both reporting ALL problems found:
- the triplet's headers and small tables (`check_triplet`), when an observation is inspected;
- the EVENTS rows, streamed per row-range chunk by transforms.read.ReadEventChunk, whose
  `EventCheck`s are merged per observation by `SummarizeEventChecks` (one log line each).
DPCO writes no product (the seed lists none); a failing observation becomes a failure record
with the message '<obs_dir>: DPCO found N problems: p1; p2; ...'.
"""
from __future__ import annotations

import dataclasses
import logging

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import events as event_io
from ecpi_beam.io import fs
from ecpi_beam.kernels import consistency
from ecpi_beam.kernels.consistency import Triplet
from ecpi_beam.transforms.base import DataclassTransform

NAMESPACE = "ecpi.dpco"
LOG = logging.getLogger(__name__)


def discover_triplet(obs_dir) -> Triplet:
    """The URLs of the one ECL-EVT-SEC, SVO-ATT-CNV and SVO-ORB-CNV file (each may be .gz)."""
    try:
        found = fs.find_triplet(obs_dir)
    except FileNotFoundError:
        raise EcpiError(f"{obs_dir}: no such observation directory") from None
    except (OSError, ValueError) as err:
        raise EcpiError(f"{obs_dir}: cannot list the observation directory ({err})") from None
    return Triplet(found["ECL-EVT-SEC"], found["SVO-ATT-CNV"], found["SVO-ORB-CNV"])


@dataclasses.dataclass(frozen=True)
class TripletContents:
    """The headers and small tables of a triplet, and the problems met while reading them."""

    triplet: Triplet
    summaries: dict  # kind -> FileSummary (absent when the file could not be opened)
    tables: dict  # extname -> (structured array, header dict) of GTI, ATTITUDE, ORBIT
    problems: list


def summarize_fits(url, kind):
    """FileSummary of one triplet file from its headers only (byte-range reads, no data).

    Returns (FileSummary or None, problems): unreadable or truncated files are problems; a
    missing extension is left to consistency.check_columns to report.
    """
    try:
        primary = event_io.read_primary_header(url)
    except (EcpiError, OSError) as err:
        return None, [f"{fs.basename(url)}: unreadable FITS ({err})"]
    columns, keywords, problems, unreadable = {}, {}, [], set()
    for extname in consistency.REQUIRED_TABLES[kind]:
        try:
            layout = event_io.table_layout(url, extname)
        except EcpiError as err:
            if "no extension" not in str(err) and str(err) not in problems:
                problems.append(str(err))
                unreadable.add(extname)
            continue
        except OSError as err:
            problems.append(f"{fs.basename(url)} {extname}: unreadable ({err})")
            unreadable.add(extname)
            continue
        columns[extname] = {column.name: column.tform for column in layout.columns}
        keywords[extname] = layout.header
    return consistency.FileSummary(fs.basename(url), primary, columns, keywords,
                                   frozenset(unreadable)), problems


def read_triplet(triplet: Triplet) -> TripletContents:
    """Headers of the three files and the small tables (GTI, ATTITUDE, ORBIT) where readable."""
    summaries, tables, problems = {}, {}, []
    for kind, url in triplet._asdict().items():
        summary, file_problems = summarize_fits(url, kind)
        problems += file_problems
        if summary is None:
            continue
        summaries[kind] = summary
        column_problems = consistency.check_columns(kind, summary)
        problems += column_problems
        if file_problems or column_problems:
            continue  # the small tables of a damaged file would only repeat the problem
        for extname in consistency.REQUIRED_TABLES[kind]:
            if extname == "EVENTS":
                continue  # streamed by chunks, never read whole
            try:
                tables[extname] = event_io.read_table(url, extname)
            except EcpiError as err:  # e.g. a truncated .gz, whose size is unknown up front
                problems.append(str(err))
    return TripletContents(triplet, summaries, tables, problems)


def check_triplet(contents: TripletContents) -> list[str]:
    """All header- and small-table-level problems of a triplet (empty when consistent)."""
    problems = list(contents.problems)
    problems += consistency.check_primary_keywords(contents.summaries)
    evt = contents.summaries.get("evt")
    if evt is None or "TSTART" not in evt.primary or "TSTOP" not in evt.primary:
        return problems
    tstart, tstop = float(evt.primary["TSTART"]), float(evt.primary["TSTOP"])
    for kind, extname in (("att", "ATTITUDE"), ("orb", "ORBIT")):
        if extname in contents.tables:
            table, _ = contents.tables[extname]
            problems += consistency.check_sampled_table(contents.summaries[kind].name, extname,
                                                        table["TIME"], tstart, tstop)
    if "ATTITUDE" in contents.tables:
        problems += consistency.check_quaternions(contents.summaries["att"].name,
                                                  contents.tables["ATTITUDE"][0]["QPARAM"])
    return problems + check_values(contents, tstart, tstop)


# columns of the small tables that must hold finite numbers: (kind, extname, columns)
FINITE_COLUMNS = (("evt", "GTI", ("START", "STOP")), ("att", "ATTITUDE", ("TIME", "QPARAM")),
                  ("orb", "ORBIT", ("TIME", "POSITION", "VELOCITY")))


def check_values(contents: TripletContents, tstart: float, tstop: float) -> list[str]:
    """Values that pass the type checks but would give silent nonsense: NaN, an orbit below the
    Earth's surface, attitude holes inside the good time, an empty EVENTS table."""
    problems = []
    for kind, extname, columns in FINITE_COLUMNS:
        if extname in contents.tables:
            table, _ = contents.tables[extname]
            for column in columns:
                problems += consistency.check_finite(contents.summaries[kind].name, extname,
                                                     column, table[column])
    if "ORBIT" in contents.tables:
        problems += consistency.check_orbit_positions(contents.summaries["orb"].name,
                                                      contents.tables["ORBIT"][0]["POSITION"])
    if "ATTITUDE" in contents.tables and "GTI" in contents.tables:
        gti = contents.tables["GTI"][0]
        start = np.clip(np.asarray(gti["START"], dtype=float), tstart, tstop)
        stop = np.clip(np.asarray(gti["STOP"], dtype=float), tstart, tstop)
        kept = stop > start  # the parts of the telemetry GTI inside [TSTART, TSTOP]
        start, stop = start[kept], stop[kept]
        problems += consistency.check_attitude_gaps(contents.summaries["att"].name,
                                                    contents.tables["ATTITUDE"][0]["TIME"],
                                                    start, stop)
    evt = contents.summaries["evt"]
    if int(evt.extension_keywords.get("EVENTS", {}).get("NAXIS2", 1)) == 0:
        problems.append(f"{evt.name} EVENTS: no rows; expected the events of [TSTART, TSTOP] "
                        f"= [{tstart}, {tstop}]")
    return problems


# ----------------------------------------------------------------------------------------------
# Beam: merge the per-chunk EVENTS checks of each observation
# ----------------------------------------------------------------------------------------------
class EventCheckCombineFn(beam.CombineFn):
    """Merges EventChecks; the accumulator is one EventCheck (counts and first rows)."""

    def create_accumulator(self):
        return consistency.EventCheck()

    def add_input(self, accumulator, check):
        return accumulator.merge(check)

    def merge_accumulators(self, accumulators):
        merged = consistency.EventCheck()
        for accumulator in accumulators:
            merged = merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


class ReportEventChecks(beam.DoFn):
    """Logs the DPCO summary line of an observation; yields a failure record if it has problems."""

    def __init__(self):
        self._failed = Metrics.counter(NAMESPACE, "observations_failed_events")
        self._backsteps = Metrics.counter(NAMESPACE, "tolerated_time_backsteps")
        self._bad_rows = {kind: Metrics.counter(NAMESPACE, f"rows_{kind}")
                          for kind in consistency.EVENT_FINDINGS}

    def process(self, element, observations):
        obs_id, check = element
        observation = observations[obs_id]
        problems = check.problems(fs.basename(observation.evt_url), observation.n_events)
        self._backsteps.inc(check.tolerated_backsteps)
        for kind, finding in check.findings.items():
            self._bad_rows[kind].inc(finding.count)
        if problems:
            self._failed.inc()
            message = consistency.dpco_error_message(observation.obs_dir, problems)
            LOG.info("DPCO %s", message)  # reported once, as an error: line, after the run
            yield {"obs_dir": observation.obs_dir, "obs_id": obs_id, "error": message}
        else:
            LOG.info("DPCO %s: OK, %d events in %d chunks, %d tolerated time back-steps",
                     observation.obs_dir, check.n_rows, check.n_chunks, check.tolerated_backsteps)


@dataclasses.dataclass(eq=False)
class SummarizeEventChecks(DataclassTransform):
    """(obs_id, EventCheck) per chunk -> failure records of observations whose EVENTS are bad."""

    observations: beam.PCollection  # (obs_id, Observation)

    def expand(self, checks):
        return (checks
                | "MergeChecks" >> beam.CombinePerKey(EventCheckCombineFn())
                | "Report" >> beam.ParDo(ReportEventChecks(),
                                         beam.pvalue.AsDict(self.observations)))
