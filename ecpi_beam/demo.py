"""`ecpi_demo`: the embedded default run, end to end, as a new user would do it by hand.

A workspace with the default CALDB (`caldb_init -s`), a simulated observation (`ecpi_simulate`),
a seed-style parameter file, `ecpi_run` on the DirectRunner, then a table of injected against
found sources and a quick-look PNG: the cleaned SNR sky image in RA/Dec with the found sources
named and the injected ones drawn, beside the noise of the raw image against the residual.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

from ecpi_beam.params import params_text

# the five default bands and the broad band (the chain benchmark's set)
DEMO_BANDS = ((13, 60), (61, 140), (141, 300), (301, 620), (621, 1260), (13, 1260))
QUICKLOOK_BAND = "13-60"  # the first default band: most of a Crab-like source's counts
# every optional key left empty, as in the seed's template: PEO, shape_moretti_earth, the
# five default bands, snr_ths 7, win_dim 5, irf_corr cos_theta
SEED_DEFAULTS = dict(energy_channels=(), ear_occ_bub=(), bkg_cor_mod=(), snr_ths="",
                     win_dim="", irf_corr="")


def demo_params(working_in, working_out) -> str:
    """The seed's parameter file with every product asked for and every default taken."""
    return params_text(
        working_in, working_out, cali_out=("ECL-GTI-CAL", "ECL-EVT-CAL"),
        bube_out=("ECL-DET-IMA", "ECL-DET-UBC", "ECL-GTI-UBC", "ECL-EAR-OFM"),
        imag_out=("ECL-SKY-IMA", "ECL-SOP-IMA"), **SEED_DEFAULTS)


def angular_offset_arcmin(ra1, dec1, ra2, dec2):
    from ecpi_beam.instrument import radec_to_unit

    cosine = np.clip(np.sum(radec_to_unit(ra1, dec1) * radec_to_unit(ra2, dec2), axis=-1), -1, 1)
    return np.degrees(np.arccos(cosine)) * 60.0


def match_sources(injected, found, radius_arcmin=60.0):
    """Pair each injected source (name, ra, dec) with the nearest found row (ra, dec, snr)."""
    pairs = []
    for name, ra, dec in injected:
        best = None
        for row in found:
            offset = float(angular_offset_arcmin(ra, dec, row["RA"], row["DEC"]))
            if offset <= radius_arcmin and (best is None or offset < best[0]):
                best = (offset, row)
        pairs.append((name, ra, dec, best))
    return pairs


def print_table(pairs, out=sys.stdout):
    print(f"{'source':<16}{'RA':>9}{'Dec':>9}  {'found':>6}{'offset':>10}{'SNR':>8}{'err90':>9}",
          file=out)
    for name, ra, dec, best in pairs:
        if best is None:
            print(f"{name:<16}{ra:9.3f}{dec:9.3f}  {'no':>6}", file=out)
        else:
            offset, row = best
            print(f"{name:<16}{ra:9.3f}{dec:9.3f}  {'yes':>6}{offset:8.1f} '{row['SNR']:8.1f}"
                  f"{row['ERR_RAD']:7.1f} '", file=out)


def quicklook_png(sky_file, sop_file, injected, band, occ, png_path):
    """ecpi_quicklook's sky panel (the cleaned SNR map with the sources named, the noise of the
    raw image against the residual) with the injected sources (name, ra, dec) drawn too."""
    from ecpi_beam import quicklook

    return quicklook.sky_png(str(sky_file), str(sop_file), band, occ, png_path,
                             injected=injected)


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="ecpi_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output", help="folder for everything (default %(default)s)")
    parser.add_argument("--scenario", help="scenario file (default: the embedded one)")
    args, beam_args = parser.parse_known_args(argv)

    from ecpi_beam import run
    from ecpi_beam.caldb import Caldb
    from ecpi_beam.caldb.init import main as caldb_init
    from ecpi_beam.simu import default_scenario, load_scenario, simulate
    from ecpi_beam.workspace import resolve_caldb_dir

    out = Path(args.out).resolve()
    working_in, working_out = out / "input", out / "output"
    working_in.mkdir(parents=True, exist_ok=True)
    working_out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ECPI_HOME", str(out / "workspace"))
    print(f"[1/4] caldb_init -s  (workspace {os.environ['ECPI_HOME']})")
    caldb_init(["-s"])
    scenario = load_scenario(args.scenario) if args.scenario else default_scenario()
    print(f"[2/4] ecpi_simulate  ({scenario.name}: {scenario.duration:.0f} s) -> {working_in}")
    truth = simulate(scenario, str(working_in), Caldb.open(resolve_caldb_dir("@local")))
    params_file = out / "parameters_file.ini"
    params_file.write_text(demo_params(working_in, working_out))
    print(f"[3/4] ecpi_run {params_file}")
    code = run.main([str(params_file), *beam_args])
    if code:
        return code

    print(f"[4/4] injected against found sources (band {QUICKLOOK_BAND}, PEO)")
    obs_id = truth.obs_id
    with fits.open(working_out / f"ECL-SOP-IMA_{obs_id}.fits") as hdul:
        table = hdul["SOURCES"].data
        found = [row for row in table if row["BAND"].strip() == QUICKLOOK_BAND]
    injected = [(src["name"], src["ra"], src["dec"]) for src in truth.sources]
    pairs = match_sources(injected, found)
    table = io.StringIO()
    print_table(pairs, out=table)
    matched = {id(best[1]) for *_, best in pairs if best is not None}
    others = [row for row in found if id(row) not in matched]
    table.write(f"other detections in this band: {len(others)}"
                + "".join(f"\n  RA {row['RA']:.3f} Dec {row['DEC']:.3f} SNR {row['SNR']:.1f}"
                          for row in others) + "\n")
    print(table.getvalue(), end="")
    (out / "sources.txt").write_text(table.getvalue())
    png = out / "quicklook_snr.png"
    view = quicklook_png(working_out / f"ECL-SKY-IMA_{obs_id}.fits",
                         working_out / f"ECL-SOP-IMA_{obs_id}.fits", injected, QUICKLOOK_BAND,
                         "PEO", png)
    print(f"quick-look: {png} (cleaned SNR, sources named; raw SNR std "
          f"{float(np.std(view.raw[view.raw != 0])):.1f} from the bright sources' coding "
          f"noise, residual std {float(np.std(view.residual[view.raw != 0])):.2f})")
    from ecpi_beam import quicklook  # every product's PNGs and the DS9 regions

    quicklook.main([str(working_out), "--out", str(out / "quicklook")])
    return 0


if __name__ == "__main__":
    from ecpi_beam.errors import exit_code_of

    sys.exit(exit_code_of(main))
