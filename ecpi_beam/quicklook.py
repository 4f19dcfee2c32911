"""`ecpi_quicklook DIR [--out DIR] [--band 13-60] [--occ PEO]`: PNGs from existing products.

For every observation whose products are in DIR (ecpi_run's working_out, local or a bucket):
- `<OBS_ID>_detector.png`: ECL-DET-IMA counts and ECL-DET-UBC background-corrected counts;
- `<OBS_ID>_sky_snr.png`: ECL-SKY-IMA SNR in RA/Dec (east left), an asinh stretch whose
  range comes from the cleaned image (RESIDUAL_SNR: the noise, not the sources, sets the
  contrast), the ECL-SOP-IMA sources marked: known ones (KNOWN_NAME) green squares, new ones
  (NEW) red circles, others cyan circles;
- `<OBS_ID>_gti.png`: the good-time intervals of ECL-GTI-CAL and ECL-GTI-UBC on one time axis;
- `<OBS_ID>_lightcurve.png`: the count rate of ECL-EVT-CAL, good time shaded;
- `ECL-SOP-IMA_<OBS_ID>.reg` beside the source list if missing (io/regions.py).
A panel whose product is absent is left out.
"""
from __future__ import annotations

import argparse
import contextlib
import re
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs
from ecpi_beam.io.regions import (COLOURS, cell_text, read_sources, regions_url, source_kind,
                                  write_regions)

PRODUCT_FILE = re.compile(r"^(ECL-[A-Z]{3}-[A-Z]{3})_(.+)\.fits$")
MARKERS = {"known": dict(marker="s", label="known"), "new": dict(marker="o", label="new"),
           "other": dict(marker="o", label="found")}  # colours: those of the region files
LIGHT_CURVE_BIN_S = 1.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def find_products(directory: str) -> dict:
    """{obs_id: {product: url}} of the product files in `directory`."""
    found = {}
    for name in fs.listdir(directory):
        match = PRODUCT_FILE.match(fs.basename(name))
        if match:
            found.setdefault(match.group(2), {})[match.group(1)] = fs.join(directory,
                                                                           fs.basename(name))
    return found


@contextlib.contextmanager
def _open(url):
    with fs.open_file(url, "rb") as handle, fits.open(handle) as hdul:
        yield hdul


def _hdu_name(hdul, prefix, band, occ):
    """`<prefix>_<band>_<occ>`, or the first HDU of that prefix when band/occ are not given."""
    names = [hdu.name for hdu in hdul if hdu.name.startswith(prefix + "_")]
    wanted = f"{prefix}_{band}_{occ}" if band and occ else None
    if wanted:
        if wanted not in names:
            raise EcpiError(f"no HDU {wanted} (has {', '.join(names) or 'none'})")
        return wanted
    if not names:
        raise EcpiError(f"no {prefix}_* HDU")
    return names[0]


def detector_png(det_url, ubc_url, band, occ, png):
    plt = _pyplot()
    panels = []
    for url, prefix, title in ((det_url, "COUNTS", "counts"), (ubc_url, "UBC", "corrected")):
        if url:
            with _open(url) as hdul:
                name = _hdu_name(hdul, prefix, band, occ)
                panels.append((np.array(hdul[name].data, dtype=float), f"{title} {name}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    for ax, (data, title) in zip(axes[0], panels):
        image = ax.imshow(data, origin="lower", cmap="viridis")
        ax.set_xlabel("JDET")
        ax.set_ylabel("IDET")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, label="count")
    fig.savefig(png, dpi=80)
    plt.close(fig)


def sky_png(sky_url, sop_url, band, occ, png):
    from astropy.visualization import AsinhStretch, ImageNormalize
    from astropy.wcs import WCS

    plt = _pyplot()
    with _open(sky_url) as hdul:
        name = _hdu_name(hdul, "SNR", band, occ)
        snr = np.array(hdul[name].data, dtype=float)
        header = hdul[name].header
        cleaned_name = name.replace("SNR_", "RESIDUAL_SNR_", 1)
        cleaned = np.array(hdul[cleaned_name].data, dtype=float) if cleaned_name in hdul else snr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # products written before DATEREF was added
        wcs = WCS(header)
    measured = cleaned[cleaned != 0]
    low = float(np.percentile(measured, 1)) if measured.size else -3.0
    norm = ImageNormalize(vmin=low, vmax=max(float(snr.max()), low + 1.0),
                          stretch=AsinhStretch(0.1))
    fig = plt.figure(figsize=(8, 7))
    ax = fig.add_subplot(projection=wcs)
    image = ax.imshow(snr, origin="lower", cmap="magma", norm=norm)
    if sop_url:
        rows = read_sources(sop_url)
        names = rows.colnames
        band_name = header.get("BAND")
        if "BAND" in names and band_name:
            rows = rows[np.array([cell_text(b) == band_name for b in rows["BAND"]], dtype=bool)]
        for kind, style in MARKERS.items():
            chosen = [row for row in rows if source_kind(row, names) == kind]
            if chosen:
                ax.scatter([row["RA"] for row in chosen], [row["DEC"] for row in chosen],
                           transform=ax.get_transform("icrs"), s=160, facecolors="none",
                           edgecolors=COLOURS[kind], marker=style["marker"],
                           label=f"{style['label']} ({len(chosen)})")
        if len(rows):
            ax.legend(loc="upper right", framealpha=0.6)
    ax.coords.grid(color="white", alpha=0.3, linestyle=":")
    ax.set_xlabel("RA (ICRS)")
    ax.set_ylabel("Dec (ICRS)")
    ax.set_title(f"ECL-SKY-IMA {name}")
    fig.colorbar(image, ax=ax, label="SNR (asinh stretch)")
    fig.savefig(png, dpi=80)
    plt.close(fig)


def _gti_rows(url):
    with _open(url) as hdul:
        return [(f"{fs.basename(url).split('_')[0]} {hdu.name}",
                 np.column_stack([hdu.data["START"], hdu.data["STOP"]]))
                for hdu in hdul[1:] if hdu.header.get("HDUCLAS1") == "GTI"]


def gti_png(gti_urls, png):
    plt = _pyplot()
    rows = [row for url in gti_urls for row in _gti_rows(url)]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.5))
    t0 = min((float(gti[:, 0].min()) for _, gti in rows if len(gti)), default=0.0)
    for index, (label, gti) in enumerate(rows):
        ax.broken_barh([(start - t0, stop - start) for start, stop in gti], (index - 0.4, 0.8))
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_xlabel(f"time since {t0:.1f} s (TT, mission time)")
    ax.set_title("good-time intervals")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


def light_curve_png(evt_url, png, bin_s=LIGHT_CURVE_BIN_S):
    plt = _pyplot()
    with _open(evt_url) as hdul:
        times = np.array(hdul["EVENTS"].data["TIME"], dtype=float)
        gti = np.column_stack([hdul["GTI"].data["START"], hdul["GTI"].data["STOP"]])
        header = hdul["EVENTS"].header
        tstart, tstop = float(header["TSTART"]), float(header["TSTOP"])
    edges = np.arange(tstart, tstop + bin_s, bin_s)
    counts, _ = np.histogram(times, bins=edges)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.step(edges[:-1] - tstart, counts / bin_s, where="post", lw=0.8)
    for start, stop in gti:
        ax.axvspan(start - tstart, stop - tstart, color="green", alpha=0.1)
    ax.set_xlabel(f"time since TSTART = {tstart:.1f} s")
    ax.set_ylabel("count/s")
    ax.set_title(f"ECL-EVT-CAL, {len(times)} events, {bin_s:g} s bins (good time shaded)")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


def quicklook(directory: str, out: Path, band=None, occ=None) -> list:
    """Make the PNGs (and missing region files) of every observation in `directory`."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for obs_id, products in sorted(find_products(directory).items()):
        get = products.get
        if get("ECL-DET-IMA") or get("ECL-DET-UBC"):
            made.append(out / f"{obs_id}_detector.png")
            detector_png(get("ECL-DET-IMA"), get("ECL-DET-UBC"), band, occ, made[-1])
        if get("ECL-SKY-IMA"):
            made.append(out / f"{obs_id}_sky_snr.png")
            sky_png(get("ECL-SKY-IMA"), get("ECL-SOP-IMA"), band, occ, made[-1])
        gtis = [url for url in (get("ECL-GTI-CAL"), get("ECL-GTI-UBC")) if url]
        if gtis:
            made.append(out / f"{obs_id}_gti.png")
            gti_png(gtis, made[-1])
        if get("ECL-EVT-CAL"):
            made.append(out / f"{obs_id}_lightcurve.png")
            light_curve_png(get("ECL-EVT-CAL"), made[-1])
        if get("ECL-SOP-IMA") and not fs.exists(regions_url(get("ECL-SOP-IMA"))):
            made.append(write_regions(get("ECL-SOP-IMA")))
    return made


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="ecpi_quicklook", description=__doc__.splitlines()[0])
    parser.add_argument("products", help="folder of the products (ecpi_run's working_out)")
    parser.add_argument("--out", help="folder for the PNGs (default: <products>/quicklook, or "
                                      "./quicklook for products in a bucket)")
    parser.add_argument("--band", help="PI band of the images, e.g. 13-60 (default: the first)")
    parser.add_argument("--occ", default=None, help="occultation type (default: the first)")
    args = parser.parse_args(argv)
    if bool(args.band) != bool(args.occ):
        raise EcpiError("ecpi_quicklook: give --band and --occ together")
    if not fs.isdir(args.products):
        raise EcpiError(f"{args.products}: no such folder of products")
    default_out = Path(args.products) / "quicklook" if fs.is_local(args.products) \
        else Path("quicklook")  # products in a bucket: PNGs in the current folder
    out = Path(args.out) if args.out else default_out
    try:
        made = quicklook(args.products, out, args.band, args.occ)
    except EcpiError as err:
        raise EcpiError(f"{args.products}: {err}") from None
    if not made:
        raise EcpiError(f"{args.products}: no ECL-* product found")
    for path in made:
        print(path)
    return 0


if __name__ == "__main__":
    import sys

    from ecpi_beam.errors import exit_code_of

    sys.exit(exit_code_of(main))
