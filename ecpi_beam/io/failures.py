"""The failure log of a run: `<working_out>/failures.jsonl`, its one home (docs/reliability.md).

A failure of one observation, in any stage, is one JSON record
`{"obs_dir": ..., "obs_id": ..., "stage": ..., "error": "<one line>"}`. Whoever meets it
(DPCO's failures in the graph, a DoFn through transforms/failures.isolating, a writer,
preflight) writes it with `FailureLog`, as one small file under `<working_out>/.ecpi-failures/`
(a dead-letter folder: a side effect that works the same on every runner and in every worker,
with no extra graph output). After each pipeline `gather` merges the dead letters into
failures.jsonl (one record per observation and stage, sorted), which therefore holds the
failures of every wave of the run. Both are removed when a run starts (pipelines/safeguards.py),
so the file never describes an older run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs

FAILURES_FILE = "failures.jsonl"
FAILURES_FOLDER = ".ecpi-failures"
# Room kept for the records: a full disk is a failure to record, when nothing else fits. The
# reserve is freed for the first record that does not fit, and before failures.jsonl is
# written; 1 MiB holds 256 records of one 4 KiB block each.
RESERVE_NAME = "reserve"
RESERVE_BYTES = 1 << 20
LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FailureLog:
    """Where the failure records of one run go (picklable: it travels with the DoFns), and its
    progress marks when a terminal shows them (io/progress.py; None otherwise)."""

    working_out: str
    progress: object = None  # io.progress.ProgressMarks

    def record(self, obs_id: str, stage: str, error: Exception) -> None:
        """Observation `obs_id` failed in `stage` with `error` (one line; an exception that is
        not a user error is named, so that a bug or an I/O fault says which it is)."""
        message = " ".join(str(error).split())
        if not isinstance(error, EcpiError):
            message = f"{type(error).__name__}: {message}"
        self.write_record({"obs_id": obs_id, "stage": stage,
                           "error": f"observation {obs_id}: {stage} failed: {message}"})

    def record_slice(self, obs_id: str, seq: int, url: str, reason: str) -> None:
        """A streaming slice that was skipped (docs/streaming.md, "Bad slices"): the file and
        what is wrong with it, as one line in `error`."""
        self.write_record({"obs_id": obs_id, "stage": "stream", "slice": int(seq),
                           "file": url, "reason": reason, "error": f"{url}: {reason}"})

    def write_record(self, record: dict) -> None:
        """One dead-letter record per observation and stage (the first one kept: later chunks
        of a failed observation usually fail the same way); the obs_id is in the record, never
        in the file name. A full disk frees the reserve and tries again."""
        about = str(record_key(record)[::2])
        name = (f"{record.get('stage') or 'failure'}."
                f"{hashlib.sha256(about.encode()).hexdigest()[:24]}.json")
        url = fs.inside(self.working_out, FAILURES_FOLDER, name)
        if fs.exists(url):
            return
        try:
            fs.put_atomic(json.dumps(record).encode(), url)
        except fs.WriteError as error:
            if error.errno not in fs.DISK_FULL_ERRNOS or not release_reserve(self.working_out):
                raise
            fs.put_atomic(json.dumps(record).encode(), url)


def failed_key(record: dict):
    """What a record is about: its observation directory, else its OBS_ID."""
    return record.get("obs_dir") or record.get("obs_id")


def record_key(record: dict) -> tuple:
    """One record per (observation, stage, file): the file is that of a skipped streaming
    slice (None otherwise)."""
    return failed_key(record), record.get("stage"), record.get("file")


def unique_records(records) -> list[dict]:
    """The first record of each `record_key`, sorted by observation, slice and file."""
    unique = {}
    for record in records:
        unique.setdefault(record_key(record), record)
    return sorted(unique.values(), key=lambda r: (str(failed_key(r)), r.get("slice", -1),
                                                   str(r.get("file"))))


def reserve_space(working_out: str) -> None:
    """Keep RESERVE_BYTES for the failure records (local disks: object stores do not fill)."""
    url = fs.inside(working_out, FAILURES_FOLDER, RESERVE_NAME)
    if not fs.is_local(url) or fs.exists(url):
        return
    try:
        fs.put_atomic(bytes(RESERVE_BYTES), url, durable=False)
    except fs.WriteError as error:  # already full: the records will have to find room
        LOG.info("no room for the failure records' reserve: %s", error)


def release_reserve(working_out: str) -> bool:
    """Free the reserve; whether there was one."""
    url = fs.inside(working_out, FAILURES_FOLDER, RESERVE_NAME)
    if not fs.exists(url):
        return False
    fs.remove(url)
    return True


def read_dead_letters(working_out: str, skip=frozenset()) -> list[tuple[str, dict]]:
    """(name, record) of the dead-letter records whose names are not in `skip`."""
    folder = fs.inside(working_out, FAILURES_FOLDER)
    if not fs.exists(folder):
        return []
    return [(name, json.loads(fs.read_bytes(fs.inside(folder, name)).decode()))
            for name in sorted(fs.listdir(folder)) if name != RESERVE_NAME and name not in skip]


def collect(working_out: str, extra=()) -> list[dict]:
    """The records of failures.jsonl, of the dead letters and `extra`: one per observation,
    stage (and skipped slice), sorted. Reads only."""
    letters = [record for _, record in read_dead_letters(working_out)]
    return unique_records([*read_records(working_out), *letters, *extra])


def write_records(working_out: str, records) -> None:
    """`<working_out>/failures.jsonl`, one JSON record a line (none: no file written)."""
    if records:
        with fs.atomic_write(fs.inside(working_out, FAILURES_FILE)) as handle:
            for record in records:
                handle.write((json.dumps(record, sort_keys=True) + "\n").encode())


def gather(working_out: str, extra=()) -> list[dict]:
    """Merge failures.jsonl, the dead letters and `extra` into failures.jsonl (none: no file),
    remove the dead letters, and return the records. The reserve is freed first, so that the
    file finds room on a full disk."""
    records = collect(working_out, extra)
    release_reserve(working_out)
    write_records(working_out, records)
    remove_dead_letters(working_out)
    return records


def remove_dead_letters(working_out: str) -> None:
    _remove(working_out, FAILURES_FOLDER)


def read_records(working_out: str) -> list[dict]:
    """The records of failures.jsonl (none when it is absent)."""
    url = fs.inside(working_out, FAILURES_FILE)
    if not fs.exists(url):
        return []
    return [json.loads(line) for line in fs.read_bytes(url).decode().splitlines() if line]


def _remove(working_out: str, name: str) -> None:
    url = fs.inside(working_out, name)
    if fs.exists(url):
        fs.remove(url, recursive=True)
