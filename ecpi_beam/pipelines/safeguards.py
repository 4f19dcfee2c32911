"""What `ecpi_run` does around the graph so that faults lose nothing and touch nothing else.

Before: working_out writable and locked (one run at a time), what a crashed or earlier run left
removed (temporaries, parts, dead letters, failures.jsonl), the whole CALDB present and intact,
and observations sharing an OBS_ID set aside as failures. After: failed observations keep no
product, and requested products that were not made are named. See docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import logging

from ecpi_beam.caldb.preflight import check_caldb
from ecpi_beam.errors import EcpiError
from ecpi_beam.io import events as event_io
from ecpi_beam.io import fs, workdir
from ecpi_beam.io import failures as failure_log
from ecpi_beam.io.failures import FAILURES_FILE, FAILURES_FOLDER
from ecpi_beam.io.progress import PROGRESS_FOLDER
from ecpi_beam.kernels.consistency import OBS_ID_PATTERN
from ecpi_beam.transforms.cali import PARTS_FOLDER
from ecpi_beam.transforms.dpco import discover_triplet

LOG = logging.getLogger(__name__)
HEADER_READERS = 8  # threads reading the campaign's OBS_IDs in preflight
__all__ = ["check_caldb", "guarded_working_out", "set_aside_duplicates", "finish_run",
           "one_line_fault"]


@contextlib.contextmanager
def guarded_working_out(working_out: str):
    """Writable, locked, cleared of our leftovers; parts and dead letters removed on the way
    out even when the run fails (failures.jsonl of this run is kept)."""
    workdir.check_writable(working_out)
    with workdir.RunLock(working_out):
        removed = workdir.remove_leftovers(
            working_out, folders=(PARTS_FOLDER, FAILURES_FOLDER, PROGRESS_FOLDER),
            files=(FAILURES_FILE,))
        if removed:
            LOG.info("removed what an earlier run left in %s: %s", working_out,
                     ", ".join(removed))
        try:
            yield
        finally:
            workdir.remove_leftovers(working_out, folders=(PARTS_FOLDER, PROGRESS_FOLDER))


def _obs_id_of(obs_dir: str) -> str | None:
    try:
        value = event_io.read_primary_header(discover_triplet(obs_dir).evt).get("OBS_ID")
    except EcpiError:
        return None
    return value.strip() if isinstance(value, str) else None


def observation_ids(observation_dirs) -> dict[str, str | None]:
    """obs_dir -> OBS_ID of its event file (None when unreadable: DPCO reports it later).

    One primary header per observation (a few kB, one range request on a bucket), read by
    a few threads so that a campaign of thousands in a bucket waits seconds, not minutes.
    """
    from concurrent.futures import ThreadPoolExecutor

    observation_dirs = list(observation_dirs)
    if len(observation_dirs) < 2:
        return {obs_dir: _obs_id_of(obs_dir) for obs_dir in observation_dirs}
    with ThreadPoolExecutor(max_workers=HEADER_READERS) as pool:
        return dict(zip(observation_dirs, pool.map(_obs_id_of, observation_dirs)))


def set_aside_duplicates(ids: dict) -> tuple[list[str], list[dict]]:
    """(directories to run, failure records): observations sharing an OBS_ID would merge
    their events and overwrite each other's products, so every one of them is set aside."""
    by_id: dict[str, list[str]] = {}
    for obs_dir, obs_id in ids.items():
        if obs_id:
            by_id.setdefault(obs_id, []).append(obs_dir)
    records, skipped = [], set()
    for obs_id, dirs in by_id.items():
        if len(dirs) < 2:
            continue
        for obs_dir in dirs:
            others = ", ".join(d for d in dirs if d != obs_dir)
            records.append({"obs_dir": obs_dir, "obs_id": None, "stage": "preflight",
                            "error": f"{obs_dir}: OBS_ID {obs_id!r} is also the OBS_ID of "
                                     f"{others}; each observation needs its own OBS_ID "
                                     f"({'both' if len(dirs) == 2 else f'all {len(dirs)}'} "
                                     "skipped)"})
            skipped.add(obs_dir)
    return [d for d in ids if d not in skipped], records


def finish_run(params, ids: dict, early_failures: list[dict]) -> tuple[list[dict], list[str]]:
    """Merge the preflight failures into failures.jsonl, remove every product of a failed
    observation, and name requested products that were not made: (failures, missing lines)."""
    working_out = params.general.working_out
    # the failed observations' products go first: on a full disk they make room for the file
    failures = failure_log.collect(working_out, early_failures)
    failed_ids = {record.get("obs_id") for record in failures if record.get("obs_id")}
    failed_ids |= {ids.get(record.get("obs_dir")) for record in failures
                   if not record.get("obs_id") and ids.get(record.get("obs_dir"))}
    duplicated = {obs_id for obs_id in ids.values()
                  if obs_id and list(ids.values()).count(obs_id) > 1}
    for url in workdir.remove_products_of(
            working_out, {i for i in failed_ids - duplicated if OBS_ID_PATTERN.fullmatch(i)}):
        LOG.info("removed %s: its observation failed", url)
    failures = failure_log.gather(working_out, early_failures)
    requested = (*params.cali.out_files, *params.bube.out_files, *params.imag.out_files)
    missing = []
    for obs_dir, obs_id in sorted(ids.items()):
        if not obs_id or obs_id in failed_ids or obs_id in duplicated:
            continue
        made = {fs.basename(url).split("_", 1)[0]
                for url in workdir.products_of(working_out, obs_id)}
        absent = [product for product in requested if product not in made]
        if absent:
            missing.append(f"observation {obs_id} ({obs_dir}): {', '.join(absent)} requested "
                           "but not made (no events for them in the good time?)")
    return failures, missing


def one_line_fault(error: BaseException) -> EcpiError | None:
    """The EcpiError or OSError behind a pipeline failure, as one line (None for a bug: its
    traceback is then the useful report)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, EcpiError):
            return EcpiError(str(error).splitlines()[0])
        if isinstance(error, OSError):
            return EcpiError(f"the run stopped on an I/O error: {fs.describe_os_error(error)}")
        error = error.__cause__ or error.__context__
    return None
