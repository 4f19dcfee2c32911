"""The campaign's mosaic, made once every observation's pipeline has run (docs/mosa.md).

`run_campaign_mosaic` takes the campaign's entries (campaign.run_campaign: done, skipped,
failed) after the failed observations have lost their products (safeguards.finish_run), and

1. gathers the stored accumulators (ECL-MOS-ACC) of the observations that succeeded, in this
   run or an earlier one: only those enter the mosaic, however the campaign was cut in waves;
2. skips when the campaign's products are up to date: each in place, stamped with the run's
   parameters and CALDB (PARHASH, CALDBHSH) and made of exactly these observations, none of
   which was (re)done now (`--force` redoes it);
3. otherwise runs transforms.mosa.CampaignMosaic. A fault (a full disk, a refused path, an
   unreadable accumulator) is a failure record; then no campaign product is kept (nothing
   partial) and an observation whose accumulator could not be read loses its products (the
   next run redoes it);
4. with [spex] sources = mosaic, runs SPEX on the mosaic's sources (ECL-MOS-SOP) in every
   observation whose spectra were not made from this very source list (their SRCHASH): the
   observations' events are read again, since the sources are known only now. An observation
   whose extraction fails there is listed and loses its spectra; it stays in the mosaic, to
   which its sky images were given.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from astropy.io import fits

from ecpi_beam.campaign import products_stamp, stamp_of
from ecpi_beam.io import failures as failure_log
from ecpi_beam.io import fs, workdir
from ecpi_beam.io.events import read_primary_header
from ecpi_beam.io.failures import FailureLog
from ecpi_beam.io.mosaic_products import read_observation_ids
from ecpi_beam.io.products import MOSAIC_OBS_ID, product_url
from ecpi_beam.kernels.sky_analysis import SourceRow
from ecpi_beam.params import MOSA_ACCUMULATOR, SPEX_PRODUCTS
from ecpi_beam.pipelines.safeguards import HEADER_READERS

LOG = logging.getLogger(__name__)
STAGE = "mosa"  # reading the accumulators, the combine, the fits (a write is stage 'write')


def campaign_products(params) -> tuple[str, ...]:
    """The campaign products to make: [mosa] out_files, and ECL-MOS-SOP whenever SPEX
    extracts the mosaic's sources (the list it extracts)."""
    products = tuple(params.mosa.out_files)
    if params.spex_from_mosaic and "ECL-MOS-SOP" not in products:
        products += ("ECL-MOS-SOP",)
    return products


def _span(url: str):
    header = read_primary_header(url)
    return float(header["TSTART"]), float(header["TSTOP"])


def accumulators_of(working_out: str, entries) -> list[tuple]:
    """[(obs_id, URL, tstart, tstop)] of the observations that succeeded and hold an
    accumulator (one with no sky image at all has none), by OBS_ID."""
    found = []
    for entry in entries:
        if entry.status not in ("done", "skipped") or not entry.obs_id:
            continue
        url = product_url(working_out, MOSA_ACCUMULATOR, entry.obs_id)
        if fs.exists(url):
            found.append((entry.obs_id, url))
    with ThreadPoolExecutor(max_workers=HEADER_READERS) as pool:
        spans = list(pool.map(lambda item: _span(item[1]), found))
    return sorted((obs_id, url, *span) for (obs_id, url), span in zip(found, spans))


def up_to_date(working_out: str, products, stamp: str, obs_ids) -> bool:
    """Every campaign product in place, stamped `stamp`, made of exactly `obs_ids`."""
    for product in products:
        url = product_url(working_out, product, MOSAIC_OBS_ID)
        if not fs.exists(url) or stamp_of(url) != stamp:
            return False
        try:
            if read_observation_ids(url) != sorted(obs_ids):
                return False
        except (OSError, KeyError, ValueError):
            return False
    return True


@dataclasses.dataclass
class _Report:
    """Where the stage's lines go: stderr for a campaign, the log for one observation (as the
    campaign's progress lines)."""

    stream: object

    def __call__(self, line: str):
        if self.stream is None:
            LOG.info(line)
        else:
            print(line, file=self.stream, flush=True)


def run_campaign_mosaic(params, caldb_dir: str, entries, run_graph, *, force: bool = False,
                        progress=None) -> tuple[dict, list[dict]]:
    """Make the campaign's mosaic (and SPEX of its sources) when not up to date; returns
    (metric totals, every failure record of the run). `run_graph(build)` runs the Beam
    graph `build(pipeline)` adds and returns its metric totals."""
    progress = progress or sys.stderr  # looked up now: a test may have replaced it
    report = _Report(progress if len(entries) > 1 else None)
    working_out = params.general.working_out
    stamp = products_stamp(params, caldb_dir)
    accumulators = accumulators_of(working_out, entries)
    combined = {obs_id for obs_id, *_ in accumulators}
    for entry in entries:  # succeeded, but no sky image to combine: said, not silently left out
        if entry.status in ("done", "skipped") and entry.obs_id and entry.obs_id not in combined:
            print(f"warning: observation {entry.obs_id} ({entry.obs_dir}): no sky image, so "
                  "not in the mosaic (no events in the good time?)", file=progress)
    failures = failure_log.gather(working_out)
    if not accumulators:
        report("campaign: mosaic: no observation to combine")
        return {}, failures
    obs_ids = [obs_id for obs_id, *_ in accumulators]
    products = campaign_products(params)
    ran = any(entry.status == "done" for entry in entries)
    totals = {}
    if not force and not ran and up_to_date(working_out, products, stamp, obs_ids):
        report(f"campaign: mosaic up to date with its {len(obs_ids)} observation(s), skipped "
               "(--force redoes it)")
    else:
        totals, failures = _make_mosaic(params, caldb_dir, accumulators, products, stamp,
                                        run_graph)
        if any(_of_the_mosaic(record) for record in failures):
            return totals, failures
        report(f"campaign: mosaic of {len(obs_ids)} observation(s) made: "
               f"{', '.join(products)}")
    if params.spex_from_mosaic:
        spex_totals, failures = _spex_of_mosaic(params, caldb_dir, entries, obs_ids, stamp,
                                                run_graph, force, report)
        totals = {key: totals.get(key, 0) + spex_totals.get(key, 0)
                  for key in totals.keys() | spex_totals.keys()}
    return totals, failures


def _of_the_mosaic(record) -> bool:
    """A failure of the campaign mosaic: a campaign product's (observation 'MOSAIC') or of
    this stage (an observation's accumulator that could not be read)."""
    return record.get("obs_id") == MOSAIC_OBS_ID or record.get("stage") == STAGE


def _make_mosaic(params, caldb_dir, accumulators, products, stamp, run_graph):
    from ecpi_beam.transforms.mosa import CampaignMosaic  # healpix: imported when asked

    working_out = params.general.working_out
    failure_log.reserve_space(working_out)  # a full disk is still recorded
    totals = run_graph(lambda pipeline: pipeline | "CampaignMosaic" >> CampaignMosaic(
        params.mosa, accumulators, caldb_dir, working_out, stamp, products,
        FailureLog(working_out)))
    failures = failure_log.gather(working_out)
    mosaic_failures = [record for record in failures if _of_the_mosaic(record)]
    if mosaic_failures:  # nothing partial: no campaign product, no unreadable accumulator
        unreadable = {record["obs_id"] for record in mosaic_failures
                      if record.get("obs_id") not in (None, MOSAIC_OBS_ID)}
        for url in workdir.remove_products_of(working_out, {MOSAIC_OBS_ID} | unreadable):
            LOG.info("removed %s: the campaign mosaic failed", url)
    return totals, failures


# ============================================================================================
# SPEX of the mosaic's sources
# ============================================================================================
def mosaic_sources(url: str):
    """[((band, occ), [SourceRow])] of an ECL-MOS-SOP file."""
    with fits.open(url if fs.is_local(url) else fs.open_file(url)) as hdul:
        table = hdul["SOURCES"].data
        by_image = {}
        for row in table:
            key = (str(row["BAND"]).strip(), str(row["OCC_TYPE"]).strip())
            by_image.setdefault(key, []).append(SourceRow(
                ra=float(row["RA"]), dec=float(row["DEC"]), err_rad_arcmin=float(row["ERR_RAD"]),
                snr=float(row["SNR"]), flux=float(row["FLUX"]), flux_err=float(row["FLUX_ERR"]),
                row=float("nan"), col=float("nan"), pcode=float(row["PCODE"])))
    return sorted(by_image.items())


def sources_hash(found) -> str:
    """Short sha256 of a source list (positions to 1e-6 deg): SPEX products made from it
    carry it as SRCHASH."""
    canonical = sorted((band, occ, round(row.ra, 6), round(row.dec, 6))
                       for (band, occ), rows in found for row in rows)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:16]


def _spectra_current(working_out, obs_id, products, stamp, srchash) -> bool:
    urls = [url for url in workdir.products_of(working_out, obs_id)
            if fs.basename(url).split("_", 1)[0] in products and url.endswith(".fits")]
    for url in urls:
        try:
            header = read_primary_header(url)
        except Exception:  # noqa: BLE001 - damaged: not current
            return False
        if header.get("SRCHASH") != srchash or stamp_of(url) != stamp:
            return False
    return bool(urls)


def _spex_of_mosaic(params, caldb_dir, entries, obs_ids, stamp, run_graph, force, report):
    from ecpi_beam.pipelines.observation import build_observation_pipeline

    working_out = params.general.working_out
    found = mosaic_sources(product_url(working_out, "ECL-MOS-SOP", MOSAIC_OBS_ID))
    srchash = sources_hash(found)
    products = [p for p in params.spex.out_files if p in SPEX_PRODUCTS]
    in_mosaic = set(obs_ids)
    todo = [entry for entry in entries if entry.obs_id in in_mosaic and (
        force or not _spectra_current(working_out, entry.obs_id, products, stamp, srchash))]
    if not todo or not any(rows for _, rows in found):
        return {}, failure_log.gather(working_out)
    report(f"campaign: SPEX of the mosaic's {sum(len(r) for _, r in found)} source(s) in "
           f"{len(todo)} observation(s)")
    only_spex = dataclasses.replace(
        params, cali=dataclasses.replace(params.cali, out_files=()),
        bube=dataclasses.replace(params.bube, out_files=()),
        imag=dataclasses.replace(params.imag, out_files=()))
    keywords = {"SRCHASH": (srchash, "sha256 (short) of the mosaic's source list")}
    failure_log.reserve_space(working_out)
    totals = run_graph(lambda pipeline: build_observation_pipeline(
        pipeline, only_spex, caldb_dir, [entry.obs_dir for entry in todo],
        mosaic_sources=found, stamp=stamp, spex_keywords=keywords))
    failures = failure_log.gather(working_out)
    failed = {record.get("obs_id") for record in failures
              if record.get("stage") == "spex" and record.get("obs_id") in in_mosaic}
    for obs_id in sorted(failed):  # its spectra go; its place in the mosaic stays (above)
        for url in workdir.products_of(working_out, obs_id):
            if workdir.product_name(url) in SPEX_PRODUCTS:
                fs.remove(url)
    return totals, failures
