"""Failure isolation: an observation that fails in some stage is recorded, and the others go on.

DPCO failures travel in the graph (ReadObservation's `failures`). A later failure of one
element (a chunk, an image) is caught where it happens, written as one small JSON record under
`<working_out>/.ecpi-failures/` (a dead-letter folder: a side effect that works the same on every
runner, with no extra graph output), and the element is dropped; `ecpi_run` gathers the records
into `failures.jsonl` after the run. Each product file that is written is still whole.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import uuid

from apache_beam.metrics import Metrics

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs

FAILURES_FILE = "failures.jsonl"
FAILURES_FOLDER = ".ecpi-failures"
NAMESPACE = "ecpi.failures"


@dataclasses.dataclass(frozen=True)
class FailureLog:
    """Where the failure records of one run go (picklable: it travels with the DoFns)."""

    working_out: str

    def record(self, obs_id: str, stage: str, error: Exception) -> None:
        message = " ".join(str(error).split())
        if not isinstance(error, EcpiError):  # a bug or an I/O fault: say which exception
            message = f"{type(error).__name__}: {message}"
        self.write_record({"obs_id": obs_id, "stage": stage,
                           "error": f"observation {obs_id}: {stage} failed: {message}"})
        Metrics.counter(NAMESPACE, stage).inc()

    def record_slice(self, obs_id: str, seq: int, url: str, reason: str) -> None:
        """A streaming slice that was skipped (docs/streaming.md, "Bad slices"): the file and
        what is wrong with it, as one line in `error`."""
        self.write_record({"obs_id": obs_id, "stage": "stream", "slice": int(seq),
                           "file": url, "reason": reason, "error": f"{url}: {reason}"})
        Metrics.counter(NAMESPACE, "stream").inc()

    def write_record(self, record: dict) -> None:
        """One dead-letter record; the obs_id is in the record, never in the file name."""
        name = f"{record.get('stage', 'failure')}.{uuid.uuid4().hex}.json"
        fs.put_atomic(json.dumps(record).encode(),
                      fs.inside(self.working_out, FAILURES_FOLDER, name))


def obs_id_of(element) -> str:
    """The obs_id of an element: a chunk descriptor, (obs_id, ...) or ((obs_id, ...), ...)."""
    if hasattr(element, "obs_id"):
        return str(element.obs_id)
    key = element[0]
    return str(key[0] if isinstance(key, tuple) else key)


def isolating(stage: str):
    """Decorates a DoFn's `process`: with a `failure_log` set on the DoFn, an exception for one
    element is recorded against its observation instead of stopping the pipeline."""
    def decorate(process):
        @functools.wraps(process)
        def guarded(self, element, *args, **kwargs):
            log = getattr(self, "failure_log", None)
            if log is None:
                yield from process(self, element, *args, **kwargs)
                return
            try:
                yield from process(self, element, *args, **kwargs)
            except Exception as error:  # noqa: BLE001 - the point is to isolate any failure
                log.record(obs_id_of(element), stage, error)
        return guarded
    return decorate


def with_failure_log(dofn, failure_log):
    dofn.failure_log = failure_log
    return dofn


def collect_failures(working_out: str) -> list[dict]:
    """Gather failures.jsonl and the dead-letter records into failures.jsonl (one record per
    observation and stage, and per file for streaming slices), remove the folder, and return
    the records."""
    records = []
    summary = fs.inside(working_out, FAILURES_FILE)
    if fs.exists(summary):
        with fs.open_file(summary, "rb") as handle:
            records += [json.loads(line) for line in handle.read().decode().splitlines() if line]
    folder = fs.inside(working_out, FAILURES_FOLDER)
    if fs.exists(folder):
        records += [record for _, record in read_dead_letters(working_out)]
        remove_dead_letters(working_out)
    records = unique_failures(records)
    write_failure_records(working_out, records)
    return records


def read_dead_letters(working_out: str, skip=frozenset()) -> list[tuple[str, dict]]:
    """(name, record) of the dead-letter records not in `skip` (names), oldest first."""
    folder = fs.inside(working_out, FAILURES_FOLDER)
    if not fs.exists(folder):
        return []
    found = []
    for name in fs.listdir(folder):
        if name in skip or not name.endswith(".json"):
            continue
        with fs.open_file(fs.inside(folder, name), "rb") as handle:
            found.append((name, json.loads(handle.read().decode())))
    return found


def unique_failures(records) -> list[dict]:
    """One record per observation and stage (and file, for skipped slices), sorted."""
    unique = {}
    for record in records:
        unique.setdefault((record.get("obs_dir") or record.get("obs_id"), record.get("stage"),
                           record.get("file")), record)
    return sorted(unique.values(), key=lambda r: (str(r.get("obs_dir") or r.get("obs_id")),
                                                   r.get("slice", -1), str(r.get("file"))))


def write_failure_records(working_out: str, records) -> None:
    """`<working_out>/failures.jsonl`, one sorted JSON record a line (none: no file written)."""
    if records:
        with fs.atomic_write(fs.join(working_out, FAILURES_FILE)) as handle:
            for record in records:
                handle.write((json.dumps(record, sort_keys=True) + "\n").encode())


def remove_dead_letters(working_out: str) -> None:
    folder = fs.inside(working_out, FAILURES_FOLDER)
    if fs.exists(folder):
        fs.remove(folder, recursive=True)
