"""Compare the eight background modes on the same Earth-crossing observations (docs/background.md).

    python benchmarks/background_modes.py [--fields N] [--duration S] [--out DIR]

Simulates N source-free observations in which the Earth rises into the field (PEO), runs the
whole chain once with the seed's defaults (for the detector images and the timelines), then
refits every key in each mode and images it (the same kernels the pipeline calls) and prints,
per mode: false detections (SNR >= 7, any band), the SNR standard deviation over the partially
coded field (pcode > 0.1), the residual chi2/dof of the fit, and the fit time per key.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from ecpi_beam import run
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.kernels import background
from ecpi_beam.kernels.bube import BackgroundCorrector
from ecpi_beam.kernels.sky_analysis import SkyAnalyser
from ecpi_beam.params import load_params, params_text
from ecpi_beam.simu import simulate
from ecpi_beam.simu.earth_crossing import earth_rise_scenario
from ecpi_beam.transforms.bube import observation_timeline
from ecpi_beam.transforms.read import inspect_observation


def simulate_fields(root: Path, n_fields: int, duration: float):
    caldb = Caldb.open(default_caldb_dir())
    rng = np.random.default_rng(7)
    for index in range(n_fields):
        scenario = earth_rise_scenario(
            name=f"rise{index:02d}", obs_id=f"{3000 + index:010d}", seed=300 + index,
            duration=duration, end_angle_deg=float(rng.uniform(52.0, 64.0)),
            roll_deg=float(rng.uniform(0.0, 360.0)))
        simulate(scenario, str(root / f"obs_{index:02d}"), caldb)


def run_defaults(root: Path):
    out = root / "out"
    out.mkdir(exist_ok=True)
    params_file = root / "params.ini"
    params_file.write_text(params_text(
        root / "obs_*", out, default_caldb_dir(), bube_out=("ECL-DET-IMA",), ear_occ_bub=(),
        bkg_cor_mod=(), snr_ths="", win_dim="", irf_corr=""))
    if run.main([str(params_file)]) != 0:
        raise SystemExit("the pipeline failed")
    return load_params(str(params_file)), out


def keys_of(root: Path, out: Path, params):
    """(obs_id, band, occ, counts, timeline) of every key."""
    for obs_dir in sorted(root.glob("obs_*")):
        observation = inspect_observation(str(obs_dir))
        timeline = observation_timeline(observation, params.bube)
        with fits.open(out / f"ECL-DET-IMA_{observation.obs_id}.fits") as hdul:
            for hdu in hdul[1:]:
                if hdu.name.startswith("COUNTS_"):
                    band, occ = hdu.header["BAND"], hdu.header["OCC_TYPE"]
                    yield observation.obs_id, band, occ, hdu.data.astype(float), timeline


def residual_chi2(counts, model, mode) -> float:
    """chi2/dof of the counts about the model (about their mean for no_correction)."""
    if mode == "no_correction":
        model = np.full(counts.shape, counts.mean())
    return float(np.sum((counts - model) ** 2 / np.maximum(model, 1.0)) / (counts.size - 1))


def compare_modes(keys, params):
    caldb = Caldb.open(default_caldb_dir())
    corrector = BackgroundCorrector.from_caldb(caldb, smart=True)
    analyser = SkyAnalyser(caldb.mask_pattern(), caldb.pixel_calibration(), params.imag)
    rows = {mode: {"false": 0, "snr_std": [], "chi2": [], "seconds": []}
            for mode in background.available_modes()}
    for obs_id, band, occ, counts, timeline in keys:
        corrector.earth_templates(obs_id, occ, timeline)  # geometry once per key, timed apart
        for mode, row in rows.items():
            start = time.perf_counter()
            key = corrector.correct(mode, counts, obs_id, band, occ, timeline)
            row["seconds"].append(time.perf_counter() - start)
            correction = key.correction
            analysis = analyser.analyse(correction.corrected, correction.variance,
                                        corrector.good, corrector.efficiency, mode,
                                        model_terms=correction.terms)
            coded = analysis.images.pcode > params.imag.pcode_min
            row["snr_std"].append(float(np.std(analysis.images.snr[coded])))
            row["false"] += len(analysis.detections)
            row["chi2"].append(residual_chi2(counts[corrector.good],
                                             correction.model[corrector.good], mode))
    return rows


def geometry_seconds(root: Path, params, repeats: int = 3) -> float:
    """Time of the Earth geometry of one (obs_id, occ): the time-averaged templates and map."""
    from ecpi_beam.kernels import earth

    caldb = Caldb.open(default_caldb_dir())
    timeline = observation_timeline(inspect_observation(str(sorted(root.glob("obs_*"))[0])),
                                    params.bube)
    start = time.perf_counter()
    for _ in range(repeats):
        earth.earth_templates(caldb.mask_pattern(), timeline, "PEO")
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=5)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--out", help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        root.mkdir(parents=True, exist_ok=True)
        simulate_fields(root, args.fields, args.duration)
        params, out = run_defaults(root)
        rows = compare_modes(list(keys_of(root, out, params)), params)
        geometry = geometry_seconds(root, params)
    print(f"{args.fields} source-free Earth-rise fields of {args.duration:.0f} s, 5 bands, PEO; "
          f"Earth geometry per (obs_id, occ): {geometry * 1e3:.0f} ms")
    print("| mode | false detections | SNR std (mean, max) | chi2/dof (mean, max) | fit ms/key |")
    print("|---|---|---|---|---|")
    for mode, row in rows.items():
        print(f"| {mode} | {row['false']} | {np.mean(row['snr_std']):.3f}, "
              f"{np.max(row['snr_std']):.3f} | {np.mean(row['chi2']):.3f}, "
              f"{np.max(row['chi2']):.3f} | {np.median(row['seconds']) * 1e3:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
