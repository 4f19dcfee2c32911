"""Campaigns of many observations: resume, progress, and `<working_out>/campaign.json`.

- **Resume.** An observation whose every product is in working_out
  (`Params.observation_products`: with a mosaic, its accumulator ECL-MOS-ACC; the campaign's
  own products are made after the waves, docs/mosa.md), stamped with the same parameters
  (header PARHASH) and the same CALDB (header CALDBHSH), is skipped; the others are (re)done;
  `ecpi_run --force` redoes all. An observation where SPEX found no source to extract has no
  SPEX product: it counts as done when the last campaign.json (same parameters and CALDB)
  lists it done. Products are written under a temporary name and
  moved into place (io/products.py), so a killed campaign leaves none that looks complete.
- **Waves.** The observations to do are run as successive Beam pipelines of `--campaign_batch`
  observations (default: all at once; on the DirectRunner, waves of about a minute, see
  `WaveSizes`), so that each wave's products, failures and metrics are final when it ends: a
  killed campaign loses only its current wave.
- **Progress.** After each wave of a campaign (two or more observations), one line on stderr
  from the Beam metrics:
  `campaign: 8/20 done, 1 failed, 11 to do; 52100 events/s; ETA 00:03:12`.
- **Summary.** `<working_out>/campaign.json` (two or more observations), rewritten after each
  wave: per observation its status (done, failed, skipped, pending), products, events, time
  and error.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time

from ecpi_beam.caldb.manifest import MANIFEST_NAME, parse_manifest
from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs, workdir
from ecpi_beam.io.events import read_primary_header, table_layout
from ecpi_beam.io.products import STAMP_SEPARATOR, product_url
from ecpi_beam.kernels.consistency import OBS_ID_PATTERN
from ecpi_beam.params import SPEX_PRODUCTS
from ecpi_beam.options import option_value
from ecpi_beam.transforms.dpco import discover_triplet

CAMPAIGN_FILE = "campaign.json"
# DirectRunner waves (WaveSizes): the first of 4 observations, the next sized to last about
# WAVE_SECONDS at the pace measured so far, at most MAX_WAVE observations (the memory of the
# observations a wave holds at once: about 7 MB each, BENCHMARKS.md)
DIRECT_RUNNER_BATCH = 4
WAVE_SECONDS = 60.0
MAX_WAVE = 32


# ============================================================================================
# Fingerprints
# ============================================================================================
def caldb_fingerprint(caldb_dir: str) -> str:
    """Short sha256 of the CALDB manifest's (product, version, file sha256) entries."""
    manifest = fs.join(caldb_dir, MANIFEST_NAME)
    try:
        text = fs.read_bytes(manifest).decode()
    except FileNotFoundError:
        raise EcpiError(f"{manifest}: no CALDB manifest; run `caldb_init -s`") from None
    entries = parse_manifest(text, manifest)
    canonical = sorted((e.product, e.version, e.sha256) for e in entries.values())
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:16]


def products_stamp(params, caldb_dir: str) -> str:
    """What every product's header records: 'PARHASH' + separator + 'CALDBHSH' (PARHASH
    alone for a CALDB without a manifest: its products are then never taken as complete)."""
    try:
        return f"{params.fingerprint()}{STAMP_SEPARATOR}{caldb_fingerprint(caldb_dir)}"
    except EcpiError:
        return params.fingerprint()


# ============================================================================================
# Planning: what is done already
# ============================================================================================
@dataclasses.dataclass
class Entry:
    """One observation of the campaign, as campaign.json lists it."""
    obs_dir: str
    obs_id: str | None = None
    status: str = "pending"  # pending, done, failed, skipped
    products: list = dataclasses.field(default_factory=list)
    events: int = 0
    time_s: float = 0.0
    error: str | None = None


def _identify(obs_dir: str, obs_id: str | None = None) -> tuple[str | None, int]:
    """(OBS_ID, number of events) from the event file's headers; (None, 0) if unreadable
    (the pipeline then says why, as a failure of that observation)."""
    try:
        evt = discover_triplet(obs_dir).evt
        if obs_id is None:
            obs_id = str(read_primary_header(evt)["OBS_ID"]).strip()
        return obs_id, table_layout(evt).n_rows
    except Exception:  # noqa: BLE001 - any fault here is the pipeline's to report
        return None, 0


def stamp_of(url: str) -> str | None:
    try:
        header = read_primary_header(url)
    except Exception:  # noqa: BLE001 - missing or damaged: not complete
        return None
    return f"{header.get('PARHASH')}{STAMP_SEPARATOR}{header.get('CALDBHSH')}"


def _files_of(working_out: str, obs_id: str, product: str) -> list[str]:
    """The files of `product` for `obs_id`: '<PRODUCT>_<OBS_ID>.fits', or for SPEX's
    per-source products every '<PRODUCT>_<OBS_ID>_S<k>_....fits' there is."""
    if product not in SPEX_PRODUCTS:
        url = product_url(working_out, product, obs_id)
        return [url] if fs.exists(url) else []
    prefix = f"{product}_{obs_id}_S"
    return [url for url in workdir.products_of(working_out, obs_id)
            if fs.basename(url).startswith(prefix) and url.endswith(".fits")]


def _made(working_out: str, obs_id: str | None, products) -> list[str]:
    """The products of `obs_id` in working_out (none for an OBS_ID that cannot name a file:
    the pipeline reports it)."""
    if not obs_id or not OBS_ID_PATTERN.fullmatch(obs_id):
        return []
    made = []
    for product in products:
        try:
            if _files_of(working_out, obs_id, product):
                made.append(product)
        except EcpiError:  # e.g. a link leading out of working_out: the pipeline refuses it
            continue
    return made


def is_complete(working_out: str, obs_id: str, products, stamp: str,
                recorded_done: bool = False) -> bool:
    """Every product of `obs_id` is in place and carries `stamp`. SPEX's: at least one file,
    all stamped; or none, when the last run's campaign.json says the observation was done with
    the same stamp (`recorded_done`: SPEX found no source to extract there)."""
    products = list(products)
    needed = [product for product in products
              if not (recorded_done and product in SPEX_PRODUCTS)]
    if not products or _made(working_out, obs_id, needed) != needed:
        return False
    return all(stamp_of(url) == stamp for product in products
               for url in _files_of(working_out, obs_id, product))


def done_before(working_out: str, stamp: str) -> set[str]:
    """The OBS_IDs the last campaign.json in `working_out` lists as done or skipped under the
    same parameters and CALDB (`stamp`); none if it is missing, unreadable or of another
    stamp."""
    try:
        with fs.open_file(fs.join(working_out, CAMPAIGN_FILE), "rb") as stream:
            summary = json.loads(stream.read())
    except Exception:  # noqa: BLE001 - no usable record: products alone decide
        return set()
    parhash, _, caldb = stamp.partition(STAMP_SEPARATOR)
    if not isinstance(summary, dict) or (summary.get("parhash"), summary.get("caldbhsh")) != (
            parhash, caldb):
        return set()
    return {str(entry.get("obs_id")) for entry in summary.get("observations", ())
            if isinstance(entry, dict) and entry.get("status") in ("done", "skipped")}


def plan(params, observation_dirs, stamp: str, force: bool, ids=None,
         set_aside=()) -> list[Entry]:
    """One entry per observation directory: 'skipped' when complete (unless `force`),
    'failed' when set aside before the run (`set_aside`: failure records naming obs_dir).

    `ids` (obs_dir -> OBS_ID, as safeguards.observation_ids reads them) saves a header read.
    """
    entries = []
    products = list(params.observation_products)
    errors = {record.get("obs_dir"): record.get("error") for record in set_aside}
    recorded = set() if force else done_before(params.general.working_out, stamp)
    for obs_dir in observation_dirs:
        obs_id, events = _identify(obs_dir, (ids or {}).get(obs_dir))
        entry = Entry(obs_dir=obs_dir, obs_id=obs_id, events=events)
        if obs_dir in errors:
            entry.status, entry.error = "failed", errors[obs_dir]
        elif not force and obs_id and is_complete(params.general.working_out, obs_id,
                                                  products, stamp, obs_id in recorded):
            entry.status, entry.products = "skipped", products
        entries.append(entry)
    return entries


# ============================================================================================
# Running, wave by wave
# ============================================================================================
def default_batch(beam_args) -> int:
    """All observations in one pipeline (0), but waves on the DirectRunner (local: the cost
    of a pipeline is small there, and the progress line comes after each wave): the size of
    its first wave."""
    runner = option_value(beam_args, "--runner", "")
    return DIRECT_RUNNER_BATCH if runner in ("", "DirectRunner") else 0


class WaveSizes:
    """How many observations each wave runs: `--campaign_batch N` (0: all at once), or on
    the DirectRunner by default a first wave of DIRECT_RUNNER_BATCH, then waves that last
    about WAVE_SECONDS at the pace of the waves so far, within [DIRECT_RUNNER_BATCH, MAX_WAVE].

    A pipeline costs about half a CPU second to build and start whatever it holds: waves of 4
    small observations spent a fifth of a campaign on it. Sized by time, a wave's cost stays a
    small share, a progress line still comes about once a minute, a killed campaign loses at
    most about a minute of work, and the observations a wave holds at once stay few."""

    def __init__(self, batch, beam_args):
        self.adaptive = batch is None and default_batch(beam_args) > 0
        self.fixed = batch if batch is not None else default_batch(beam_args)
        self.observations, self.seconds = 0, 0.0

    def done(self, observations: int, seconds: float) -> None:
        self.observations += observations
        self.seconds += seconds

    def next(self, remaining: int) -> int:
        if not self.adaptive:
            return remaining if not self.fixed or self.fixed < 1 else min(self.fixed, remaining)
        if not self.observations:
            return min(DIRECT_RUNNER_BATCH, remaining)
        pace = self.seconds / self.observations
        size = int(WAVE_SECONDS / max(pace, 1e-9))
        return min(max(size, DIRECT_RUNNER_BATCH), MAX_WAVE, remaining)


def made_products(working_out: str, obs_ids, products) -> dict[str, list[str]]:
    """obs_id -> which of `products` are in working_out for it (SPEX's per-source files and
    the mosaic's 'MOSAIC' included), from one listing."""
    valid = [obs_id for obs_id in obs_ids if obs_id and OBS_ID_PATTERN.fullmatch(obs_id)]
    files = workdir.products_by_observation(working_out, valid)
    names = {obs_id: {workdir.product_name(url) for url in urls} for obs_id, urls in files.items()}
    return {obs_id: [product for product in products if product in names.get(obs_id, ())]
            for obs_id in obs_ids}


def settle(entries, failures, working_out: str, products) -> None:
    """Each entry that ran: 'failed' with its error when a record names it, else 'done' with
    the products really in working_out (after a run, the failed ones' are gone)."""
    failed = {}
    for failure in failures:
        failed.setdefault(failure.get("obs_dir") or failure.get("obs_id"), failure)
    ran = [entry for entry in entries if entry.status in ("done", "failed", "pending")]
    made = made_products(working_out, [entry.obs_id for entry in ran], products)
    for entry in ran:
        failure = failed.get(entry.obs_dir) or failed.get(entry.obs_id)
        if failure is not None:
            entry.status, entry.error, entry.products = "failed", failure.get("error"), []
        else:
            entry.status, entry.products = "done", made.get(entry.obs_id, [])


def _record_wave(entries, wave, failures, working_out, products, elapsed):
    events = sum(entry.events for entry in wave) or 1
    for entry in wave:  # the wave's time shared by events: exact for a wave of one observation
        entry.time_s = round(elapsed * max(entry.events, 1) / events, 3)
    settle(wave, failures, working_out, products)


def progress_line(entries, events_per_s: float, elapsed: float) -> str:
    done = sum(entry.status in ("done", "skipped") for entry in entries)
    failed = sum(entry.status == "failed" for entry in entries)
    todo = [entry for entry in entries if entry.status == "pending"]
    ran = [entry for entry in entries if entry.status in ("done", "failed")]
    per_observation = elapsed / len(ran) if ran else 0.0
    eta = time.strftime("%H:%M:%S", time.gmtime(per_observation * len(todo)))
    return (f"campaign: {done}/{len(entries)} done, {failed} failed, {len(todo)} to do; "
            f"{events_per_s:.0f} events/s; ETA {eta}")


def write_summary(working_out: str, entries, started: float, stamp: str, totals: dict,
                  **extra):
    """campaign.json (two or more observations); `extra` adds top-level keys (the mosaic).
    A failure to write it (a full disk) is a warning: the products and failures.jsonl are
    what counts."""
    if len(entries) < 2:  # one observation is no campaign: its working_out holds products only
        return
    parhash, _, caldb = stamp.partition(STAMP_SEPARATOR)
    count = {status: sum(entry.status == status for entry in entries)
             for status in ("done", "failed", "skipped", "pending")}
    summary = {"total": len(entries), **count, "parhash": parhash, "caldbhsh": caldb,
               "events": int(totals.get("ecpi.read.events", 0)),
               "elapsed_s": round(time.time() - started, 3), **extra,
               "observations": [dataclasses.asdict(entry) for entry in entries]}
    try:
        with fs.atomic_write(fs.join(working_out, CAMPAIGN_FILE)) as stream:
            stream.write((json.dumps(summary, indent=1) + "\n").encode())
    except fs.WriteError as error:
        print(f"warning: {error}", file=sys.stderr)


def run_campaign(params, beam_args, caldb_dir, observation_dirs, run_pipeline, *,
                 force: bool = False, batch: int | None = None, stamp: str | None = None,
                 ids=None, set_aside=(), progress=None):
    """Plan (see `plan`), then `run_pipeline(dirs)` -> (metric totals, the run's failure
    records so far: failures.jsonl gathers every wave's, io/failures.py) wave by wave.
    Returns (entries, summed metric totals, the failure records of the waves).
    """
    started = time.time()
    working_out = params.general.working_out
    stamp = stamp or products_stamp(params, caldb_dir)
    entries = plan(params, observation_dirs, stamp, force, ids, set_aside)
    todo = [entry for entry in entries if entry.status == "pending"]
    skipped = sum(entry.status == "skipped" for entry in entries)
    progress = progress or sys.stderr  # looked up now: a test may have replaced it
    if len(entries) < 2:  # one observation: ecpi_run's summary line says it all
        progress = None
    if skipped and progress:
        print(f"campaign: {skipped} observation(s) already done with the same parameters and "
              "CALDB, skipped (--force redoes them)", file=progress)
    sizes = WaveSizes(batch, beam_args)
    totals, failures, run_time, first = {}, [], 0.0, 0
    while first < len(todo):
        wave = todo[first:first + sizes.next(len(todo) - first)]
        first += len(wave)
        wave_started = time.time()
        wave_totals, wave_failures = run_pipeline([entry.obs_dir for entry in wave])
        elapsed = time.time() - wave_started
        sizes.done(len(wave), elapsed)
        run_time += elapsed
        for name, value in wave_totals.items():
            totals[name] = totals.get(name, 0) + value
        failures = wave_failures
        _record_wave(entries, wave, wave_failures, working_out,
                     params.observation_products, elapsed)
        write_summary(working_out, entries, started, stamp, totals)
        if progress:
            print(progress_line(entries, totals.get("ecpi.read.events", 0) / max(run_time, 1e-9),
                                run_time), file=progress, flush=True)
    if not todo:
        write_summary(working_out, entries, started, stamp, totals)
    return entries, totals, failures
