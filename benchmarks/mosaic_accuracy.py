"""How well the campaign mosaic places and measures sources: the calibration of docs/mosa.md.

    python benchmarks/mosaic_accuracy.py [--campaigns 2] [--fields 4] [--observations 5]
        [--duration 150] [--cache DIR]

Each campaign: --fields fields at random centres, six steady sources each (0.05-1 Crab,
log-uniform, 2-12 deg from the centre, 4 deg apart), --observations pointings per field
(2-12 deg off the centre, random roll), every observation seeing every source of the sky,
simulated by ecpi_simulate's engine; then `ecpi_run` with IMAG's source lists, the five
default bands and ECL-MOS-SOP. The mosaic's detections are matched to the truth (within 60')
in each band, and compared with the single observations' detections of the same sources
(within 30'). Prints: the offsets of bright detections (SNR >= 20) against the single
observations'; the fraction of the truth inside ERR_RAD and 1.5 ERR_RAD, by SNR; FLUX against
the mean of the single-observation FLUX values (sources detected in four or more), and against
the truth (13-60 keV, scaled by the brightest sources).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from bench_chain import DEFAULT_CACHE  # noqa: E402

BAND = "13-60"


def offset_pointing(rng, quaternion, low, high):
    from ecpi_beam import instrument

    angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(low, high)
    los = np.array([1.0, np.tan(np.radians(distance * np.cos(angle))),
                    np.tan(np.radians(distance * np.sin(angle)))])
    ra, dec = instrument.los_to_radec(los / np.linalg.norm(los), quaternion)
    return float(ra), float(dec)


def simulate_campaign(root: Path, seed: int, n_fields: int, n_obs: int, duration: float):
    """root/obs_NN and root/truth.json (name -> RA, Dec, norm), once."""
    from ecpi_beam import instrument
    from ecpi_beam.caldb import Caldb, default_caldb_dir
    from ecpi_beam.simu import PointSource, Pointing, default_scenario, scenario_with, simulate
    from ecpi_beam.simu.scenario import _phase_away_from

    if (root / "truth.json").exists():
        return
    rng = np.random.default_rng(seed)
    fields = []
    for field in range(n_fields):
        quaternion = instrument.quaternion_from_pointing(rng.uniform(0, 360),
                                                         rng.uniform(-60, 60), 0.0)
        sources = []
        while len(sources) < 6:
            ra, dec = offset_pointing(rng, quaternion, 0.0, 12.0)
            far = all(np.degrees(np.arccos(np.clip(
                instrument.radec_to_unit(ra, dec) @ instrument.radec_to_unit(s.ra, s.dec),
                -1, 1))) > 4 for s in sources)
            if far:
                crab = float(np.exp(rng.uniform(np.log(0.05), np.log(1.0))))
                sources.append(PointSource(name=f"C{seed}F{field}S{len(sources)}", ra=ra,
                                           dec=dec, norm=10.0 * crab, index=2.1))
        fields.append((quaternion, sources))
    sky = tuple(source for _, sources in fields for source in sources)
    caldb, base, index = Caldb.open(default_caldb_dir()), default_scenario(), 0
    for quaternion, _ in fields:
        for _ in range(n_obs):
            ra, dec = offset_pointing(rng, quaternion, 2.0, 12.0)
            pointing = Pointing(ra=ra, dec=dec, roll=float(rng.uniform(0, 360)), start=0.0)
            scenario = scenario_with(base, name=f"obs{index:02d}",
                                     obs_id=f"{seed * 100 + index:010d}",
                                     seed=seed * 1000 + index, tstart=3.0e8 + 5000.0 * index,
                                     duration=duration, pointings=(pointing,), sources=sky,
                                     initial_slew_deg=0.0)
            scenario = replace(scenario, orbit=replace(
                scenario.orbit, phase_deg=_phase_away_from(pointing, scenario)))
            simulate(scenario, str(root / f"obs_{index:02d}"), caldb)
            index += 1
    (root / "truth.json").write_text(json.dumps({s.name: (s.ra, s.dec, s.norm) for s in sky}))


def run_pipeline(root: Path):
    from ecpi_beam.caldb import default_caldb_dir
    from ecpi_beam.params import params_text

    out = root / "out"
    if (out / "ECL-MOS-SOP_MOSAIC.fits").exists():
        return
    out.mkdir(exist_ok=True)
    (root / "params.ini").write_text(params_text(
        root / "obs_*", out, default_caldb_dir(), imag_out=("ECL-SOP-IMA",),
        extra={"mosa": {"out_files": "['ECL-MOS-SOP']"}}))
    script = Path(sys.executable).parent / "ecpi_run"
    subprocess.run([str(script), str(root / "params.ini")], check=False)


def matches(root: Path):
    """[(band, SNR, offset, ERR_RAD, FLUX, mean single FLUX, singles, norm)] per detection."""
    from astropy.io import fits
    from astropy.table import Table, vstack

    from ecpi_beam.demo import angular_offset_arcmin

    truth = json.loads((root / "truth.json").read_text())
    out = root / "out"
    rows = Table(fits.open(out / "ECL-MOS-SOP_MOSAIC.fits")["SOURCES"].data)
    singles = vstack([Table(fits.open(path)["SOURCES"].data)
                      for path in sorted(out.glob("ECL-SOP-IMA_*.fits"))])
    found = []
    for band in sorted(set(np.char.strip(np.asarray(rows["BAND"], str)))):
        in_band = rows[np.char.strip(np.asarray(rows["BAND"], str)) == band]
        single = singles[np.char.strip(np.asarray(singles["BAND"], str)) == band]
        for ra, dec, norm in truth.values():
            offsets = angular_offset_arcmin(ra, dec, in_band["RA"], in_band["DEC"])
            if not len(offsets) or offsets.min() > 60:
                continue
            row = in_band[int(np.argmin(offsets))]
            near = single[angular_offset_arcmin(ra, dec, single["RA"], single["DEC"]) < 30]
            found.append((band, float(row["SNR"]), float(offsets.min()), float(row["ERR_RAD"]),
                          float(row["FLUX"]), float(np.mean(near["FLUX"])) if len(near) else
                          np.nan, len(near), norm))
    return found


def report(found) -> None:
    snr, offset, radius = (np.array([f[k] for f in found]) for k in (1, 2, 3))
    bright = snr >= 20
    print(f"{len(found)} mosaic detections matched to the truth, {bright.sum()} bright "
          f"(SNR >= 20): offset median {np.median(offset[bright]):.2f}', max "
          f"{offset[bright].max():.2f}'")
    ratio = offset / radius
    print(f"truth inside ERR_RAD {np.mean(ratio <= 1):.3f}, inside 1.5 ERR_RAD "
          f"{np.mean(ratio <= 1.5):.3f}, largest offset / ERR_RAD {ratio.max():.2f}")
    for low, high in ((7, 15), (15, 30), (30, 60), (60, np.inf)):
        sel = (snr >= low) & (snr < high)
        if sel.any():
            print(f"  SNR {low}-{high}: {sel.sum()} detections, inside ERR_RAD "
                  f"{np.mean(ratio[sel] <= 1):.2f}, offset median {np.median(offset[sel]):.2f}', "
                  f"ERR_RAD median {np.median(radius[sel]):.2f}'")
    flux, mean_single, n_single = (np.array([f[k] for f in found]) for k in (4, 5, 6))
    seen = (n_single >= 4) & bright
    against_singles = flux[seen] / mean_single[seen]
    print(f"FLUX / mean single-observation FLUX (bright, detected in >= 4): mean "
          f"{against_singles.mean():.3f}, range {against_singles.min():.3f}-"
          f"{against_singles.max():.3f} ({seen.sum()})")
    in_band = np.array([f[0] == BAND for f in found])
    norm = np.array([f[7] for f in found])
    scale = np.median(flux[in_band & (snr > 60)] / norm[in_band & (snr > 60)])
    for low, high in ((10, 20), (20, 40), (40, 80), (80, np.inf)):
        sel = in_band & (snr >= low) & (snr < high) & (n_single >= 3)
        if sel.any():
            truth = scale * norm[sel]
            print(f"  {BAND} SNR {low}-{high}: FLUX / truth {np.mean(flux[sel] / truth):.3f}, "
                  f"mean single FLUX / truth {np.mean(mean_single[sel] / truth):.3f} "
                  f"({sel.sum()})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=2)
    parser.add_argument("--fields", type=int, default=4)
    parser.add_argument("--observations", type=int, default=5)
    parser.add_argument("--duration", type=float, default=150.0)
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    found = []
    for seed in range(2, 2 + args.campaigns):
        root = Path(args.cache) / "mosaic-accuracy" / f"campaign-{seed}"
        simulate_campaign(root, seed, args.fields, args.observations, args.duration)
        run_pipeline(root)
        found += matches(root)
    report(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
