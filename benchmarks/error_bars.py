"""Do ERR_RAD and FLUX_ERR hold what they promise? Coverage of the 90 % error radius and flux
pulls per reference-SNR bin on simulated fields (docs/imaging.md, "Error model").

    python benchmarks/error_bars.py [--path pipeline|kernels] [--fields 16] [--sources 5]
        [--seed 26] [--duration 150] [--band 13-300 ...] [--snr 5 100 ...] [--min-pcode 0.3]
        [--out DIR [--reuse]] [--scores FILE] [--bare] [--calibrate]

--path pipeline (default): each field is simulated as an event file (ecpi_simulate's
simulator), the whole chain runs once over the campaign (ecpi_run, DirectRunner, the seed's
defaults but the bands), and ECL-SOP-IMA / ECL-SKY-IMA are compared with the truth.
--path kernels: the same fields as detector images drawn from the simulator's expectation,
through the BUBE and IMAG kernels the pipeline calls (ecpi_beam.simu.fields): fast, for
thousands of sources; --bare scores the fits' statistical errors alone, --calibrate fits the
error model's terms (ecpi_beam.simu.scoring.calibrate_error_model) and prints the shipped and
the fitted model's tables. Fields are random (FieldSimulator.field_scenario) from --seed:
pointing, roll, source positions and SNR (log-uniform in each --snr range, taken in turn).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from ecpi_beam import instrument, run
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.io.image_products import parse_band
from ecpi_beam.kernels.sky_analysis import SourceRow
from ecpi_beam.params import params_text
from ecpi_beam.simu import simulate
from ecpi_beam.kernels.error_model import ERROR_MODEL, ErrorModel
from ecpi_beam.simu.fields import FieldSimulator, analysed_fields
from ecpi_beam.simu.scoring import (TABLE_HEADER, calibrate_error_model, calibration_points,
                                    score_source, scores_with, summarise)


REPORTED_BINS = ((0.0, 7.0), (7.0, 10.0), (10.0, 20.0), (20.0, np.inf))


def field_scenarios(simulator, args):
    rng = np.random.default_rng(args.seed)
    return [simulator.field_scenario(rng, args.seed * 10000 + index, args.sources,
                                     args.snr, args.bands[0], args.duration, args.min_pcode)
            for index in range(args.fields)]


def kernel_fields(simulator, args):
    model = ErrorModel() if args.bare else ERROR_MODEL
    return analysed_fields(simulator, args.seed, args.fields, args.sources, args.snr,
                           args.bands, args.duration, args.min_pcode, model)


def kernel_scores(simulator, args):
    return [(instrument.band_name(analysed.field.band),
             score_source(source, analysed.rows, analysed.field.exposure, analysed.variance))
            for _, analysed in kernel_fields(simulator, args)
            for source in analysed.field.sources]


def product_rows(sop: Path, band: str):
    """ECL-SOP-IMA SOURCES of one band as SourceRows (sky-grid row, col from SKY_X, SKY_Y)."""
    rows = []
    with fits.open(sop) as hdul:
        for r in hdul["SOURCES"].data:
            if r["BAND"].strip() != band:
                continue
            row, col = instrument.fits_to_sky_pixel(r["SKY_X"], r["SKY_Y"])
            rows.append(SourceRow(ra=float(r["RA"]), dec=float(r["DEC"]),
                                  err_rad_arcmin=float(r["ERR_RAD"]), snr=float(r["SNR"]),
                                  flux=float(r["FLUX"]), flux_err=float(r["FLUX_ERR"]),
                                  row=float(row), col=float(col), pcode=float(r["PCODE"])))
    return rows


def pipeline_scores(simulator, scenarios, args, root: Path):
    out = root / "out"
    if not (args.reuse and out.is_dir()):
        run_pipeline(scenarios, args, root, out)
    scores = []
    for scenario, band in itertools.product(scenarios, args.bands):
        name = instrument.band_name(band)
        with fits.open(out / f"ECL-SKY-IMA_{scenario.obs_id}.fits") as hdul:
            hdu = next(h for h in hdul if h.name.startswith(f"VARIANCE_{name}_"))
            variance = instrument.sky_image_to_fits(hdu.data.astype(float))
            variance = np.where(variance > 0, variance, np.inf)
            exposure = float(hdu.header["EXPOSURE"])
        rows = product_rows(out / f"ECL-SOP-IMA_{scenario.obs_id}.fits", name)
        scores += [(name, score_source(source, rows, exposure, variance))
                   for source in simulator.injected(scenario, band)]
    return scores


def run_pipeline(scenarios, args, root: Path, out: Path):
    caldb = Caldb.open(default_caldb_dir())
    for index, scenario in enumerate(scenarios):
        simulate(scenario, str(root / f"obs_{index:03d}"), caldb)
    out.mkdir(exist_ok=True)
    params = root / "params.ini"
    params.write_text(params_text(root / "obs_*", out, default_caldb_dir(),
                                  energy_channels=args.bands, ear_occ_bub=(), bkg_cor_mod=(),
                                  snr_ths="", win_dim="", irf_corr="",
                                  imag_out=("ECL-SKY-IMA", "ECL-SOP-IMA")))
    if run.main([str(params), "--force"]) != 0:
        raise SystemExit("the pipeline failed")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=("pipeline", "kernels"), default="pipeline")
    parser.add_argument("--fields", type=int, default=16)
    parser.add_argument("--sources", type=int, default=5, help="per field")
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--duration", type=float, default=150.0, help="s per field")
    parser.add_argument("--band", dest="bands", type=parse_band, action="append",
                        help="PI range lo-hi, repeatable (default 13-300); sources are aimed at "
                             "their SNR in the first")
    parser.add_argument("--min-pcode", type=float, default=0.3,
                        help="sources where at least this fraction of the detector sees them")
    parser.add_argument("--snr", type=float, nargs=2, action="append",
                        help="range of the aimed SNR (log-uniform; default 5 100); repeated, "
                             "the sources of a field take the ranges in turn")
    parser.add_argument("--out", type=Path, default=None,
                        help="working folder of the pipeline path (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true",
                        help="pipeline path: score the products already in --out")
    parser.add_argument("--bare", action="store_true",
                        help="kernel path: ERR_RAD and FLUX_ERR from the fits' statistical "
                             "errors alone (no error-model terms)")
    parser.add_argument("--calibrate", action="store_true",
                        help="kernel path: fit the error model's terms on these fields and "
                             "print them with the coverage and pulls they give")
    parser.add_argument("--scores", type=Path, default=None,
                        help="write every source's score to this JSON file")
    args = parser.parse_args(argv)
    args.bands = tuple(args.bands or [(13, 300)])
    args.snr = tuple(map(tuple, args.snr or [(5.0, 100.0)]))
    started = time.time()
    simulator = FieldSimulator(Caldb.open(default_caldb_dir()))
    if args.calibrate:
        return calibrate(simulator, args, started)
    if args.path == "kernels":
        scores = kernel_scores(simulator, args)
    elif args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        scores = pipeline_scores(simulator, field_scenarios(simulator, args), args, args.out)
    else:
        with tempfile.TemporaryDirectory() as folder:
            scores = pipeline_scores(simulator, field_scenarios(simulator, args), args,
                                     Path(folder))
    print(f"{args.path}{' (bare)' if args.bare else ''}: {args.fields} fields x "
          f"{args.sources} sources, seed {args.seed}, "
          f"{args.duration:g} s, bands {', '.join(map(instrument.band_name, args.bands))}, "
          f"{time.time() - started:.0f} s")
    if args.scores:
        args.scores.write_text(json.dumps([{"band": band, **dataclasses.asdict(score)}
                                           for band, score in scores]))
    print(TABLE_HEADER)
    for summary in summarise([score for _, score in scores], REPORTED_BINS):
        print(summary.line())
    return 0


def calibrate(simulator, args, started):
    points = [point for _, analysed in kernel_fields(simulator, args)
              for point in calibration_points(analysed)]
    model = calibrate_error_model(points, ERROR_MODEL)
    print(f"calibration: {args.fields} fields x {args.sources} sources, seed {args.seed}, "
          f"{len(points)} found, {time.time() - started:.0f} s")
    for name, value in (("shipped", ERROR_MODEL), ("fitted", model)):
        print(f"{name}: {value}")
        print(TABLE_HEADER)
        for summary in summarise(scores_with(points, value), REPORTED_BINS[1:]
                                 + ((20.0, 40.0), (40.0, 80.0), (80.0, np.inf))):
            print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
