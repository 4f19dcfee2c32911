"""MOSA at survey scale: the campaign mosaic of N observations' stored accumulators on the
DirectRunner, time per observation and peak memory against N (docs/mosa.md).

    python benchmarks/bench_mosaic.py [--observations 100 --observations 300 ...]
        [--sources 300] [--products all|image] [--cache DIR] [--json out.json]

Inputs: N synthetic ECL-MOS-ACC files (made once, cached under <cache>/mosaic/), one per
observation, written by the project's writer: one band and occultation type, a sky image of
the instrument's partial coding and variance (a flat background's, imaged once by the IMAG
kernels), Gaussian noise of that variance as the residual, and the restored sources of a
fixed sky of --sources steady sources (uniform over the sphere, 0.02-0.5 count s-1 cm-2)
that fall in its field, pointings uniform over the sphere, random rolls.

Each N is one fresh process (`--child`, one BLAS thread as ecpi_run sets it):
transforms.mosa.CampaignMosaic through run.run_graph on the DirectRunner, what ecpi_run does
after the waves: the all-sky HEALPix
combine (ECL-MOS-IMA), and with --products all the sources' local fits, the catalogue and the
light curves (ECL-MOS-SOP, ECL-MOS-LCS). Measured from outside: wall time (imports included),
CPU time, peak RSS (wait4), the load.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from bench_chain import DEFAULT_CACHE, child_env, measure, write_json  # noqa: E402
from ecpi_beam import BLAS_THREAD_VARIABLES  # noqa: E402

BAND, OCC, EXPOSURE_S = "13-60", "PEO", 1000.0
STAMP = "0123456789abcdef+0123456789abcdef"
PRODUCTS = {"all": ("ECL-MOS-IMA", "ECL-MOS-SOP", "ECL-MOS-LCS"), "image": ("ECL-MOS-IMA",)}


def obs_id(index: int) -> str:
    return f"{9_000_000_000 + index:010d}"


def inputs_folder(cache: str, n_sources: int) -> str:
    return os.path.join(cache, "mosaic", f"sources-{n_sources}")


def _sky_template():
    """(variance, pcode) of a sky image of a flat background (counts per open pixel), once."""
    from ecpi_beam import instrument
    from ecpi_beam.caldb import Caldb, default_caldb_dir
    from ecpi_beam.kernels import imaging

    pattern = Caldb.open(default_caldb_dir()).mask_pattern()
    plan = imaging.make_correlation_plan(instrument.resample_mask(pattern))
    background = np.full((instrument.N_PIX, instrument.N_PIX), 200.0)
    sky = imaging.balanced_sky_image(plan, background, background, np.ones_like(background))
    as_product = instrument.sky_image_to_fits
    return as_product(sky.variance), as_product(sky.pcode)


def make_inputs(folder: str, n: int, n_sources: int) -> list:
    """[(obs_id, URL, tstart, tstop)] of n accumulators, written when missing."""
    from ecpi_beam import instrument
    from ecpi_beam.io.mosaic_products import mosaic_input_hdus
    from ecpi_beam.io.products import product_url, standard_keywords, write_product
    from ecpi_beam.kernels import mosaic

    os.makedirs(folder, exist_ok=True)
    sky_rng = np.random.default_rng(1)
    vectors = sky_rng.normal(size=(n_sources, 3))
    ra, dec = instrument.unit_to_radec(vectors)
    fluxes = np.exp(sky_rng.uniform(np.log(0.02), np.log(0.5), n_sources))
    template = None
    accumulators = []
    for index in range(n):
        name = obs_id(index)
        url = product_url(folder, "ECL-MOS-ACC", name)
        tstart = 3.0e8 + 5000.0 * index
        accumulators.append((name, url, tstart, tstart + EXPOSURE_S))
        if os.path.exists(url):
            continue
        if template is None:
            template = _sky_template()
        variance, pcode = template
        rng = np.random.default_rng(1000 + index)
        pointing = rng.normal(size=3)
        p_ra, p_dec = instrument.unit_to_radec(pointing / np.linalg.norm(pointing))
        quaternion = instrument.quaternion_from_pointing(float(p_ra), float(p_dec),
                                                         float(rng.uniform(0, 360)))
        keywords = instrument.sky_wcs_keywords(quaternion)
        measured = np.isfinite(variance)
        residual = np.where(measured, rng.normal(size=variance.shape)
                            * np.sqrt(np.where(measured, variance, 0.0)), 0.0)
        x, y = mosaic._wcs_pixels(keywords, ra, dec)
        inside = np.isfinite(x) & (x > 0) & (x < 198) & (y > 0) & (y < 198)
        seen = [mosaic.RestoredSource(float(ra[k]), float(dec[k]),
                                      float(fluxes[k] * rng.normal(1.0, 0.05)))
                for k in np.flatnonzero(inside) if pcode[int(y[k]), int(x[k])] > 0.1]
        rates = mosaic.SkyRates.from_counts(residual, variance, pcode, EXPOSURE_S, keywords, seen)
        write_product(url, mosaic_input_hdus([(BAND, OCC, rates)]), standard_keywords(
            "ECL-MOS-ACC", {"OBS_ID": name, "TSTART": tstart, "TSTOP": tstart + EXPOSURE_S},
            STAMP))
    return accumulators


def child(n: int, folder: str, n_sources: int, products: str) -> int:
    """The campaign mosaic of the first n accumulators, as ecpi_run makes it."""
    from ecpi_beam.caldb import default_caldb_dir
    from ecpi_beam.params import MosaParams
    from ecpi_beam.run import run_graph
    from ecpi_beam.transforms.failures import FailureLog
    from ecpi_beam.transforms.mosa import CampaignMosaic

    accumulators = make_inputs(folder, n, n_sources)[:n]
    with tempfile.TemporaryDirectory(dir=folder) as out:
        totals = run_graph(["--runner", "DirectRunner"], lambda pipeline: (
            pipeline | CampaignMosaic(MosaParams(out_files=PRODUCTS[products]), accumulators,
                                      default_caldb_dir(), out, STAMP, PRODUCTS[products],
                                      FailureLog(out))))
        print(f"images {int(totals.get('ecpi.mosa.images_on_healpix', 0))} sources "
              f"{int(totals.get('ecpi.mosa.sources_found', 0))} light-curve points "
              f"{int(totals.get('ecpi.mosa.light_curve_points', 0))} products "
              f"{int(totals.get('ecpi.write.products_written', 0))}")
        if os.path.exists(os.path.join(out, ".ecpi-failures")):
            print("failures:", os.listdir(os.path.join(out, ".ecpi-failures")))
            return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, action="append", default=[])
    parser.add_argument("--sources", type=int, default=300)
    parser.add_argument("--products", choices=sorted(PRODUCTS), default="all")
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    parser.add_argument("--json")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    folder = inputs_folder(args.cache, args.sources)
    if args.child:
        return child(args.child, folder, args.sources, args.products)
    sizes = args.observations or [100, 300, 1000]
    make_inputs(folder, max(sizes), args.sources)
    env = child_env(args.cache, cold_imports=False)
    for variable in BLAS_THREAD_VARIABLES:  # as ecpi_run has them (ecpi_beam/__init__.py)
        env.setdefault(variable, "1")
    command = [sys.executable, os.path.abspath(__file__), "--sources", str(args.sources),
               "--products", args.products, "--cache", args.cache, "--child"]
    measure([*command, str(min(sizes))], env)  # warm-up: bytecode cache, file cache
    print(f"campaign mosaic on the DirectRunner, products {args.products}, "
          f"{args.sources} sky sources, {os.cpu_count()} cores")
    print(f"{'observations':>12} {'wall s':>8} {'CPU s':>8} {'s/obs':>7} {'CPU s/obs':>9} "
          f"{'peak RSS MB':>11} {'load':>5}  counts")
    records = []
    for n in sizes:
        run = measure([*command, str(n)], env)
        if run["returncode"]:
            print(run["stdout"], run["stderr"][-3000:])
            return 1
        cpu = run["user_s"] + run["sys_s"]
        print(f"{n:>12} {run['seconds']:>8.1f} {cpu:>8.1f} {run['seconds'] / n:>7.3f} "
              f"{cpu / n:>9.3f} {run['peak_rss_mb']:>11.0f} {run['load']:>5.1f}  "
              f"{run['stdout'].strip()}", flush=True)
        records.append({key: value for key, value in run.items() if key != "stderr"} | {"n": n})
    write_json(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
