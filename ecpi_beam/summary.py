"""ecpi_run's summary line: what the run did and made.

Products are counted from what is in working_out once the run is over (those of failed
observations are removed by then, MOSA's and SPEX's count as any other); events and sources
come from Beam's metrics where the runner reports them, else (the DaskRunner reports none)
from what was written: events from the event files' headers, calibrated events from
ECL-EVT-CAL; sources from the ECL-SOP-IMA catalogues written, when they are asked for. What
neither can tell is said so.
"""
from __future__ import annotations

import time

from ecpi_beam.io import events as event_io
from ecpi_beam.io import workdir
from ecpi_beam.io.products import MOSAIC_OBS_ID, product_url
from ecpi_beam.kernels.calibrate import DROP_REASONS
from ecpi_beam.kernels.consistency import OBS_ID_PATTERN

PRODUCT_FILE_SUFFIXES = (".fits", ".rmf", ".arf")  # not the .reg and .xml beside them
NOT_COUNTED = "not counted (no metrics from this runner)"


def metrics_reported(totals: dict, entries) -> bool:
    """Whether the runner reported Beam metrics: any observation that ran read chunks."""
    ran = any(entry.status in ("done", "failed") and entry.events for entry in entries)
    return not ran or "ecpi.read.chunks" in totals


def product_files(working_out: str, obs_ids) -> dict[str, list[str]]:
    """obs_id -> the URLs of its product files (FITS, RMF, ARF) in working_out."""
    valid = [obs_id for obs_id in obs_ids if obs_id and OBS_ID_PATTERN.fullmatch(obs_id)]
    return {obs_id: [url for url in urls if url.endswith(PRODUCT_FILE_SUFFIXES)]
            for obs_id, urls in workdir.products_by_observation(working_out, valid).items()}


def _catalogue_counts(working_out: str, obs_ids):
    """(sources, new sources) of the observations' ECL-SOP-IMA catalogues; None when one is
    missing."""
    from astropy.io import fits

    from ecpi_beam.io import fs

    sources = new = 0
    for obs_id in obs_ids:
        url = product_url(working_out, "ECL-SOP-IMA", obs_id)
        if not fs.exists(url):
            return None
        with fs.open_file(url, "rb") as handle, fits.open(handle) as hdul:
            if "CATALOG" not in hdul:
                return None
            table = hdul["CATALOG"].data
            sources += len(table)
            new += int(table["NEW"].sum()) if len(table) else 0
    return sources, new


def _calibrated_events(working_out: str, obs_ids):
    """Rows of the observations' ECL-EVT-CAL; None when one is missing."""
    total = 0
    for obs_id in obs_ids:
        try:
            total += event_io.table_layout(product_url(working_out, "ECL-EVT-CAL", obs_id),
                                           "EVENTS").n_rows
        except Exception:  # noqa: BLE001 - absent or unreadable: not countable from files
            return None
    return total


def summary_line(params, entries, totals: dict, started: float, not_made=()) -> str:
    """The line ecpi_run prints last, on stdout."""
    working_out = params.general.working_out
    failed = [entry for entry in entries if entry.status == "failed"]
    skipped = sum(entry.status == "skipped" for entry in entries)
    done = [entry.obs_id for entry in entries if entry.status == "done"]
    files = product_files(working_out, [*done, MOSAIC_OBS_ID])
    n_products = sum(len(urls) for urls in files.values())
    with_metrics = metrics_reported(totals, entries)
    if with_metrics:
        events = int(totals.get("ecpi.read.events", 0))
        dropped = ", ".join(f"{reason} {int(totals.get(f'ecpi.cali.dropped_{reason}', 0))}"
                            for reason in DROP_REASONS)
        calibrated = f"{int(totals.get('ecpi.cali.events_out', 0))} (dropped: {dropped})"
    else:
        events = sum(entry.events for entry in entries if entry.status in ("done", "failed"))
        rows = _calibrated_events(working_out, done) if done else 0
        calibrated = NOT_COUNTED if rows is None else f"{rows} (in ECL-EVT-CAL)"
    # the sources of the catalogues written (a failed observation's are gone), else the metric
    counts = (_catalogue_counts(working_out, done) if done else (0, 0)) \
        if "ECL-SOP-IMA" in params.imag.out_files else None
    if counts is not None:
        sources = f"{counts[0]} ({counts[1]} new)"
    elif with_metrics:
        sources = (f"{int(totals.get('ecpi.imag.sources_found', 0))} "
                   f"({int(totals.get('ecpi.imag.new_sources', 0))} new)")
    else:
        sources = NOT_COUNTED
    limited = int(totals.get("ecpi.imag.cleaning_limit_reached", 0))
    off_pointing = int(totals.get("ecpi.bube.good_seconds_off_pointing", 0))
    pointings = int(totals.get("ecpi.bube.pointings_imaged", 0))
    slews = int(totals.get("ecpi.bube.slew_seconds", 0))
    notes = ((f"cleaning stopped at its safety limit in {limited} image(s); " if limited else "")
             + (f"stable pointings imaged {pointings}, slews {slews} s not imaged; "
                if pointings else "")
             + (f"good time not imaged (on no stable pointing) {off_pointing} s; "
                if off_pointing else "")
             + (f"requested products not made {len(not_made)}; " if not_made else ""))
    return (f"ecpi_run: {len(entries) - len(failed)}/{len(entries)} observation(s) processed"
            + (f" ({skipped} already done, skipped)" if skipped else "")
            + f" in {time.time() - started:.1f} s; events read {events}, calibrated "
            f"{calibrated}; products {n_products}; sources {sources}; {notes}"
            f"products in {working_out}")
