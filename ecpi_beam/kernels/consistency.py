"""DPCO consistency checks of an input triplet (ICD section 2), as pure functions.

Every check returns a list of problem strings (one line each, naming the file, extension, key or
column, the value found and the value expected) so that DPCO reports ALL problems of an
observation at once. Checks over the EVENTS rows work per row-range chunk (`check_event_chunk`)
and their results merge (`EventCheck.merge`), so a whole event file is never in memory.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import NamedTuple

import numpy as np

from ecpi_beam import instrument

# extension -> {column: FITS TFORM} per ICD section 2, and the file kind that carries it
REQUIRED_TABLES = {
    "evt": {"EVENTS": {"TIME": "D", "IDET": "B", "JDET": "B", "PHA": "I", "FLAG": "B"},
            "GTI": {"START": "D", "STOP": "D"}},
    "att": {"ATTITUDE": {"TIME": "D", "QPARAM": "4D", "FLAG_ATT": "B"}},
    "orb": {"ORBIT": {"TIME": "D", "POSITION": "3D", "VELOCITY": "3D", "FLAG_PVT": "B"}},
}
PRIMARY_KEYWORDS = ("TELESCOP", "OBS_ID", "TSTART", "TSTOP", "MJDREFI", "MJDREFF", "TIMESYS",
                    "TIMEUNIT")
SHARED_KEYWORDS = ("OBS_ID", "TELESCOP", "MJDREFI", "MJDREFF", "TIMESYS")
TELESCOP = "SVOM"
EVENTS_INSTRUME = "ECLAIRs"
MAX_TIME_BACKSTEP_S = 100e-6  # ICD: EVENTS rows may step back in TIME by up to 100 us
# Duplicated events (docs/cali.md, "Duplicated events"): rows repeating an earlier row's TIME,
# IDET, JDET and PHA. Even if a pixel could record two photons within one 20 us time stamp
# (pile-up merges those closer than the shaping time into one event, dead time loses more),
# chance gives few such pairs with the same 12-bit PHA as well (`chance_duplicates`, summed
# over every chunk of the file); more than chance (a Poisson tail below
# DUPLICATE_FALSE_ALARM, and at least DUPLICATE_MIN_ROWS) are rows copied on the ground, and
# DPCO refuses the observation. Copies share their TIME, and rows sharing a TIME
# lie within a few rows of each other (TIME order, back-steps of at most 100 us): each chunk is
# checked with this many rows before it, so copies across a chunk boundary are found too,
# with no state growing with the file.
DUPLICATE_LOOKBACK_ROWS = 64
DUPLICATE_FALSE_ALARM = 2.9e-7  # one-sided 5 sigma: a valid file is refused once in 3.5e6
DUPLICATE_MIN_ROWS = 2
QUATERNION_NORM_TOLERANCE = 1e-3
# Attitude is sampled at about 1 Hz (ICD 2): a longer hole inside the good time would be bridged
# by a slerp over an unknown motion, so DPCO refuses it (docs/reliability.md).
MAX_ATTITUDE_GAP_S = 10.0
MJDREFF_TOLERANCE = 1e-12
# OBS_ID names products and temporary files (ICD section 5): letters, digits, '-' and '_', at
# most 40 characters, so that FILENAME = 'ECL-DET-UBC_<OBS_ID>.fits' fits one 80-character
# card (68 characters of string value, FITS standard 4.2.1.1) with no CONTINUE card.
OBS_ID_MAX_LENGTH = 40
OBS_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,%d}" % OBS_ID_MAX_LENGTH)


class Triplet(NamedTuple):
    """URLs of one observation's input files."""

    evt: str
    att: str
    orb: str


@dataclasses.dataclass(frozen=True)
class FileSummary:
    """What DPCO needs of one FITS file: its name, primary keywords and table columns."""

    name: str  # base name, used in messages
    primary: dict  # primary-header keywords
    columns: dict  # extname -> {column: TFORM}
    extension_keywords: dict = dataclasses.field(default_factory=dict)  # extname -> {key: value}
    unreadable: frozenset = frozenset()  # extensions present but damaged (reported already)


def _normal_tform(tform):
    """'1D' and 'D' are the same FITS column type; keep the repeat count otherwise."""
    match = re.fullmatch(r"\s*(\d*)([A-Za-z])\S*\s*", str(tform))
    if not match:
        return str(tform).strip()
    repeat = match.group(1) or "1"
    return match.group(2).upper() if repeat == "1" else repeat + match.group(2).upper()


def check_columns(kind, summary):
    """Missing extensions, missing columns and wrong FITS types of one file of the triplet."""
    problems = []
    for extname, required in REQUIRED_TABLES[kind].items():
        columns = summary.columns.get(extname)
        if extname in summary.unreadable:
            continue
        if columns is None:
            problems.append(f"{summary.name}: extension {extname} is missing")
            continue
        for column, tform in required.items():
            if column not in columns:
                problems.append(f"{summary.name} {extname}: column {column} is missing "
                                f"(expected TFORM {tform})")
            elif _normal_tform(columns[column]) != tform:
                problems.append(f"{summary.name} {extname}: column {column} has TFORM "
                                f"{columns[column]}; expected {tform}")
    if kind == "evt" and "EVENTS" in summary.columns:
        instrume = summary.extension_keywords.get("EVENTS", {}).get("INSTRUME")
        if instrume != EVENTS_INSTRUME:
            problems.append(f"{summary.name} EVENTS: INSTRUME = {instrume!r}; "
                            f"expected {EVENTS_INSTRUME!r}")
    return problems


def _shown(value, limit=48):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(str(value))} characters)"


def check_obs_id(name, value):
    """OBS_ID must match OBS_ID_PATTERN before it names anything (ICD section 5)."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and OBS_ID_PATTERN.fullmatch(text):
        return []
    return [f"{name}: OBS_ID = {_shown(value)}; expected 1 to {OBS_ID_MAX_LENGTH} letters, "
            "digits, '-' or '_'"]


def check_primary_keywords(summaries):
    """ICD keywords present in each primary header, equal across the triplet where they must be.

    summaries: {kind: FileSummary}, kinds among 'evt', 'att', 'orb'.
    """
    problems = []
    for summary in summaries.values():
        missing = [key for key in PRIMARY_KEYWORDS if key not in summary.primary]
        if missing:
            problems.append(f"{summary.name}: primary header lacks {', '.join(missing)}")
        if "TELESCOP" in summary.primary and summary.primary["TELESCOP"] != TELESCOP:
            problems.append(f"{summary.name}: TELESCOP = {summary.primary['TELESCOP']!r}; "
                            f"expected {TELESCOP!r}")
        if "TIMEUNIT" in summary.primary and summary.primary["TIMEUNIT"] != "s":
            problems.append(f"{summary.name}: TIMEUNIT = {summary.primary['TIMEUNIT']!r}; "
                            "expected 's'")
    bad_obs_ids = {}  # one line per bad value, naming every file that carries it
    for summary in summaries.values():
        value = summary.primary.get("OBS_ID")
        if "OBS_ID" in summary.primary and check_obs_id(summary.name, value):
            bad_obs_ids.setdefault(repr(value), (value, []))[1].append(summary.name)
    for value, names in bad_obs_ids.values():
        problems += check_obs_id(", ".join(names), value)
    for key in SHARED_KEYWORDS:
        values = {s.name: s.primary[key] for s in summaries.values() if key in s.primary}
        if len(values) < 2:
            continue
        reference = next(iter(values.values()))
        if key == "MJDREFF":
            equal = all(abs(float(v) - float(reference)) <= MJDREFF_TOLERANCE
                        for v in values.values())
        else:
            equal = all(str(v).strip() == str(reference).strip() for v in values.values())
        if not equal:
            listed = ", ".join(f"{name} {_shown(value)}" for name, value in values.items())
            problems.append(f"{key} differs across the triplet: {listed}")
    evt = summaries.get("evt")
    if evt is not None and "TSTART" in evt.primary and "TSTOP" in evt.primary:
        if not float(evt.primary["TSTART"]) < float(evt.primary["TSTOP"]):
            problems.append(f"{evt.name}: TSTART {evt.primary['TSTART']} is not before "
                            f"TSTOP {evt.primary['TSTOP']}")
    return problems


def check_sampled_table(name, extname, time, tstart, tstop):
    """An attitude or orbit TIME column: increasing and covering the events' [TSTART, TSTOP]."""
    time = np.asarray(time, dtype=float)
    if len(time) == 0:
        return [f"{name} {extname}: no rows; expected samples covering [{tstart}, {tstop}]"]
    problems = []
    if np.any(np.diff(time) <= 0):
        problems.append(f"{name} {extname}: TIME is not strictly increasing")
    if time.min() > tstart or time.max() < tstop:
        problems.append(f"{name} {extname}: TIME covers [{time.min()}, {time.max()}], not the "
                        f"events' [TSTART, TSTOP] = [{tstart}, {tstop}]")
    return problems


def check_quaternions(name, qparam):
    """Attitude quaternions must have unit norm (ICD)."""
    norm = np.linalg.norm(np.asarray(qparam, dtype=float).reshape(-1, 4), axis=1)
    bad = np.flatnonzero(np.abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE)
    if len(bad) == 0:
        return []
    return [f"{name} ATTITUDE: {len(bad)} QPARAM rows with norm != 1 "
            f"(first at row {bad[0]}: norm {norm[bad[0]]:.6g})"]


def check_finite(name, extname, column, values):
    """A column of a small table (TIME, QPARAM, POSITION...) holds no NaN or infinity."""
    values = np.asarray(values, dtype=float)
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    rows = np.flatnonzero(bad)
    if len(rows) == 0:
        return []
    return [f"{name} {extname}: {len(rows)} rows with {column} not finite (NaN or infinite; "
            f"first at row {rows[0]})"]


def check_orbit_positions(name, position):
    """The spacecraft is above the Earth's surface: |POSITION| >= EARTH_RADIUS_KM (zero, a
    wrong unit or a lost fix would silently give wrong occultation classes)."""
    radius_km = np.linalg.norm(np.asarray(position, dtype=float).reshape(-1, 3), axis=1) / 1e3
    rows = np.flatnonzero(np.isfinite(radius_km) & (radius_km < instrument.EARTH_RADIUS_KM))
    if len(rows) == 0:
        return []
    return [f"{name} ORBIT: {len(rows)} rows with POSITION below the Earth's surface "
            f"(|POSITION| < {instrument.EARTH_RADIUS_KM:g} km; first at row {rows[0]}: "
            f"{radius_km[rows[0]]:.6g} km); expected metres from the Earth's centre"]


def check_attitude_gaps(name, time, good_start, good_stop, limit_s=MAX_ATTITUDE_GAP_S):
    """No hole longer than limit_s between attitude samples inside the good time."""
    time = np.asarray(time, dtype=float)
    finite = np.flatnonzero(np.isfinite(time))
    if len(finite) < 2:
        return []
    before, after = time[finite[:-1]], time[finite[1:]]
    start = np.asarray(good_start, dtype=float)[None, :]
    stop = np.asarray(good_stop, dtype=float)[None, :]
    long_gap = (after - before) > limit_s
    in_good = ((before[:, None] < stop) & (after[:, None] > start)).any(axis=1)
    gaps = np.flatnonzero(long_gap & in_good)
    if len(gaps) == 0:
        return []
    first = gaps[0]
    return [f"{name} ATTITUDE: {len(gaps)} gaps longer than {limit_s:g} s inside the good time "
            f"(first after row {finite[first]}: {after[first] - before[first]:.6g} s from TIME "
            f"{float(before[first])!r})"]


# ----------------------------------------------------------------------------------------------
# EVENTS rows, chunk by chunk
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Finding:
    """Rows of one kind of problem: how many, and the first one (row number, value)."""

    count: int
    first_row: int
    first_value: float

    def merge(self, other):
        first = self if self.first_row <= other.first_row else other
        return Finding(self.count + other.count, first.first_row, first.first_value)


# kind -> message template: '{count} ... (first at row {row}: {value})'
EVENT_FINDINGS = {
    "time_backstep": "TIME steps back by more than 100 us",
    "time_outside": "TIME outside [TSTART, TSTOP]",
    "pha_range": f"PHA outside 0..{instrument.N_PHA - 1}",
    "idet_range": f"IDET outside 0..{instrument.N_PIX - 1}",
    "jdet_range": f"JDET outside 0..{instrument.N_PIX - 1}",
    "time_nan": "TIME not finite",
    "duplicate": "TIME, IDET, JDET and PHA of an earlier row (events written twice? chance "
                 "gives {chance:.2g} such rows in one pixel's 20 us time stamps)",
}


@dataclasses.dataclass
class EventCheck:
    """Merged result of checking EVENTS row chunks: a small accumulator (counts and firsts)."""

    n_rows: int = 0
    n_chunks: int = 0
    tolerated_backsteps: int = 0  # steps back of at most 100 us, allowed by the ICD
    findings: dict = dataclasses.field(default_factory=dict)  # kind -> Finding
    chance_duplicates: float = 0.0  # duplicates chance could give in the chunks checked

    def merge(self, other):
        findings = dict(self.findings)
        for kind, finding in other.findings.items():
            findings[kind] = findings[kind].merge(finding) if kind in findings else finding
        return EventCheck(self.n_rows + other.n_rows, self.n_chunks + other.n_chunks,
                          self.tolerated_backsteps + other.tolerated_backsteps, findings,
                          self.chance_duplicates + other.chance_duplicates)

    def refused(self, kind) -> bool:
        """Whether the rows of `kind` are a problem: always, but duplicates only beyond chance."""
        finding = self.findings.get(kind)
        if finding is None:
            return False
        if kind != "duplicate":
            return True
        return bool(finding.count >= DUPLICATE_MIN_ROWS and poisson_tail(
            finding.count, self.chance_duplicates) < DUPLICATE_FALSE_ALARM)

    def problems(self, file_name, n_expected_rows=None):
        """One message per kind of problem, in EVENT_FINDINGS order."""
        messages = [f"{file_name} EVENTS: {self.findings[kind].count} rows with "
                    + EVENT_FINDINGS[kind].format(chance=self.chance_duplicates)
                    + f" (first at row {self.findings[kind].first_row}: "
                    f"{self.findings[kind].first_value:.12g})"
                    for kind in EVENT_FINDINGS if self.refused(kind)]
        if n_expected_rows is not None and self.n_rows != n_expected_rows:
            messages.append(f"{file_name} EVENTS: {self.n_rows} rows checked; NAXIS2 says "
                            f"{n_expected_rows}")
        return messages


def _finding(bad, values, first_row):
    index = np.flatnonzero(bad)
    if len(index) == 0:
        return None
    return Finding(int(len(index)), int(first_row + index[0]), float(values[index[0]]))


def check_event_chunk(events, first_row, previous_time, tstart, tstop, *, previous_rows=None):
    """EventCheck of the EVENTS rows [first_row, first_row + len(events)).

    previous_time: TIME of row first_row - 1 (None for the first chunk), so that the time-order
    check also holds across chunk boundaries; previous_rows: the rows just before the chunk (up
    to DUPLICATE_LOOKBACK_ROWS, the last one being row first_row - 1), so that a duplicate of
    one of them is found too. Each check first looks at the column's extremes (one reduction)
    and builds the per-row mask only when they break its bound: a good chunk costs a few
    reductions, not a mask per check.
    """
    time, pha = events["TIME"], events["PHA"]
    times = time if previous_time is None else np.concatenate([[previous_time], time])
    step = np.diff(times)
    step_row = first_row + 1 if previous_time is None else first_row  # row of step[0]'s later row
    t_lo, t_hi = _extremes(time, tstart)
    p_lo, p_hi = _extremes(pha, 0)
    s_lo, _ = _extremes(step, 0.0)
    candidates = {  # kind: (possible, mask maker, values, row of values[0])
        "time_backstep": (not s_lo >= -MAX_TIME_BACKSTEP_S,
                          lambda: step < -MAX_TIME_BACKSTEP_S, step, step_row),
        "time_outside": (not (t_lo >= tstart and t_hi <= tstop),
                         lambda: (time < tstart) | (time > tstop), time, first_row),
        "pha_range": (not (p_lo >= 0 and p_hi < instrument.N_PHA),
                      lambda: (pha < 0) | (pha >= instrument.N_PHA), pha, first_row),
        "idet_range": (not _extremes(events["IDET"], 0)[1] < instrument.N_PIX,
                       lambda: events["IDET"] >= instrument.N_PIX, events["IDET"], first_row),
        "jdet_range": (not _extremes(events["JDET"], 0)[1] < instrument.N_PIX,
                       lambda: events["JDET"] >= instrument.N_PIX, events["JDET"], first_row),
        "time_nan": (not (np.isfinite(t_lo) and np.isfinite(t_hi)),
                     lambda: ~np.isfinite(time), time, first_row),
    }
    findings = {}
    for kind, (possible, bad, values, row0) in candidates.items():
        finding = _finding(bad(), values, row0) if possible else None
        if finding is not None:
            findings[kind] = finding
    duplicate = _finding(duplicated_rows(events, previous_rows, s_lo >= 0), time, first_row)
    if duplicate is not None:
        findings["duplicate"] = duplicate
    # every chunk's chance, not only that of the chunks holding repeats: the chance of the
    # whole file is what a count of repeats is weighed against
    chance = chance_duplicates(events)
    tolerated = 0 if s_lo >= 0 else int(((step < 0) & (step >= -MAX_TIME_BACKSTEP_S)).sum())
    return EventCheck(len(events), 1, tolerated, findings, chance)


def poisson_tail(count: int, mean: float) -> float:
    """P(N >= count) for N Poisson of `mean` (no scipy on the run's path)."""
    if count <= 0:
        return 1.0
    if mean <= 0.0:
        return 0.0
    if count <= mean:  # a large tail: 1 - P(N < count) loses no digits
        term, below = math.exp(-mean), 0.0
        for k in range(int(count)):
            below += term
            term *= mean / (k + 1)
        return max(1.0 - below, 0.0)
    # beyond the mean the terms fall faster than geometrically: sum them from P(N = count)
    term = math.exp(-mean + count * math.log(mean) - math.lgamma(count + 1))
    total, k = 0.0, int(count)
    while term > 0.0 and term > total * 1e-17:
        total += term
        k += 1
        term *= mean / k
    return total


def chance_duplicates(events) -> float:
    """How many rows of `events` would repeat another's TIME, IDET, JDET and PHA by chance if
    a pixel could record two photons within one time stamp: per pixel, its pairs of events
    n (n - 1) / 2, each within one 20 us stamp with probability 20 us / (time span) and of
    equal PHA with probability sum_k f_k^2 (f the PHA distribution). An upper bound (pile-up
    and dead time lower it), computed for every chunk: summed, the file's."""
    time = events["TIME"][np.isfinite(events["TIME"])]
    valid = (events["IDET"] < instrument.N_PIX) & (events["JDET"] < instrument.N_PIX)
    if len(time) < 2 or not valid.any():
        return 0.0
    span = max(float(time.max() - time.min()), instrument.TIME_RESOLUTION_S)
    pixel = events["IDET"][valid].astype(np.int64) * instrument.N_PIX + events["JDET"][valid]
    per_pixel = np.bincount(pixel, minlength=instrument.N_PIX ** 2).astype(float)
    pha = np.clip(events["PHA"].astype(np.int64), 0, instrument.N_PHA - 1)
    fractions = np.bincount(pha, minlength=instrument.N_PHA) / len(pha)
    pairs = float(np.sum(per_pixel * (per_pixel - 1.0)) / 2.0)
    return pairs * min(instrument.TIME_RESOLUTION_S / span, 1.0) * float(np.sum(fractions ** 2))


def duplicated_rows(events, previous_rows=None, time_ordered=None) -> np.ndarray:
    """Mask of the rows of `events` whose TIME, IDET, JDET and PHA equal those of an earlier
    row (of `events`, or of `previous_rows`, the rows just before them).

    Copies share their TIME exactly, so only rows whose TIME occurs twice are compared: in a
    time-ordered chunk (the usual case, `time_ordered`) one comparison of neighbours finds none
    and the check ends there; otherwise those rows are sorted by (TIME, pixel, PHA, row).
    """
    before = 0 if previous_rows is None else len(previous_rows)
    rows = events if not before else np.concatenate(
        [previous_rows[list(events.dtype.names)].astype(events.dtype), events])
    time = rows["TIME"]
    if time_ordered is None or before:
        time_ordered = bool(np.all(time[1:] >= time[:-1]))
    order = None if time_ordered else np.argsort(time, kind="stable")
    ordered = time if order is None else time[order]
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return np.zeros(len(events), dtype=bool)
    shared = np.zeros(len(rows), dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    candidates = np.flatnonzero(shared) if order is None else order[shared]
    key = ((rows["IDET"][candidates].astype(np.int64) * 256 + rows["JDET"][candidates]) * 65536
           + (rows["PHA"][candidates].astype(np.int64) & 0xFFFF))
    by = np.lexsort((candidates, key, time[candidates]))
    candidates, key, times = candidates[by], key[by], time[candidates][by]
    repeat = np.zeros(len(candidates), dtype=bool)
    repeat[1:] = (key[1:] == key[:-1]) & (times[1:] == times[:-1])
    mask = np.zeros(len(rows), dtype=bool)
    mask[candidates[repeat]] = True
    return mask[before:]


def _extremes(values, empty):
    """(min, max) of an array (NaN when it holds one); (empty, empty) for no value."""
    if not len(values):
        return empty, empty
    return values.min(), values.max()


def dpco_error_message(obs_dir, problems):
    """The one-line DPCO failure: '<obs_dir>: DPCO found N problems: p1; p2; ...'."""
    noun = "problem" if len(problems) == 1 else "problems"
    return f"{obs_dir}: DPCO found {len(problems)} {noun}: " + "; ".join(problems)
