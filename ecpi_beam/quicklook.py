"""`ecpi_quicklook DIR [--out DIR] [--band 13-60] [--occ PEO]`: PNGs from existing products.

For every observation whose products are in DIR (ecpi_run's working_out, local or a bucket):
- `<OBS_ID>_detector.png`: ECL-DET-IMA counts and ECL-DET-UBC background-corrected counts;
- `<OBS_ID>_sky_snr.png`: what a coded-mask quick-look shows. Left, the cleaned SNR in
  RA/Dec (east left): RESIDUAL_SNR (the noise, unit standard deviation) with each ECL-SOP-IMA
  source of the image put back as a clean PSF of its SNR, marked and named beside its mark
  (known ones, KNOWN_NAME, in green squares; new ones, NEW, red circles; others cyan) with its
  SNR. The raw SNR is not shown as a map: a bright source's coding noise and side lobes make it
  look full of sources. Right, the pixel distributions of the raw and residual SNR against
  N(0, 1), with their standard deviations: the raw one's width is that coding noise;
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
from typing import NamedTuple

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
MARK_SIZE = 160  # points^2, the sources' marks: no label covers one
INJECTED_MATCH_DEG = 1.0  # a found source this close to an injected one is named after it too


def angular_distance_deg(ra1, dec1, ra2, dec2) -> float:
    from ecpi_beam.instrument import radec_to_unit

    cosine = float(np.clip(radec_to_unit(ra1, dec1) @ radec_to_unit(ra2, dec2), -1.0, 1.0))
    return float(np.degrees(np.arccos(cosine)))


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


def _image_parts(prefix, name):
    """(band, occ, pointing) of an HDU named `<prefix>_<band>_<occ>[_P<k>]`, or None."""
    match = re.fullmatch(rf"{prefix}_([0-9]+-[0-9]+)_([A-Z]+)(?:_P([0-9]+))?", name)
    return match and (match.group(1), match.group(2), int(match.group(3) or 0))


def _hdu_name(hdul, prefix, band=None, occ=None, pointing=0):
    """`<prefix>_<band>_<occ>` (`..._P<k>` for stable pointing k > 0): the first HDU of that
    prefix and pointing whose band and occultation type are those given (either, both or
    none)."""
    names = [hdu.name for hdu in hdul if _image_parts(prefix, hdu.name)]
    chosen = [name for name, (b, o, k) in ((n, _image_parts(prefix, n)) for n in names)
              if k == pointing and (not band or b == band) and (not occ or o == occ)]
    if not chosen:
        wanted = f"{prefix}_{band or '*'}_{occ or '*'}" + (f"_P{pointing}" if pointing else "")
        raise EcpiError(f"no HDU {wanted} (has {', '.join(names) or 'none'})")
    return chosen[0]


def pointings_of(url, prefix) -> list[int]:
    """The stable pointings (0, 1, ...) whose `<prefix>_...` images a product holds."""
    with _open(url) as hdul:
        return sorted({parts[2] for parts in (_image_parts(prefix, hdu.name) for hdu in hdul)
                       if parts}) or [0]


def detector_png(det_url, ubc_url, band, occ, png, pointing=0):
    plt = _pyplot()
    panels = []
    for url, prefix, title in ((det_url, "COUNTS", "counts"), (ubc_url, "UBC", "corrected")):
        if url:
            with _open(url) as hdul:
                name = _hdu_name(hdul, prefix, band, occ, pointing)
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


class SkyView(NamedTuple):
    """What the sky quick-look shows of one image: the cleaned SNR with the sources restored,
    the raw SNR and the residual (for the noise panel), the WCS, the sources of the image."""

    name: str
    restored: np.ndarray
    raw: np.ndarray
    residual: np.ndarray | None
    wcs: object
    sources: list  # (ra, dec, label, kind, snr)


def source_label(row, names) -> str:
    """'Crab' or 'ECL J190423.1-194800': the catalogue's name of a source row."""
    return next((cell_text(row[column]) for column in ("KNOWN_NAME", "NAME")
                 if column in names and cell_text(row[column])), "")


def sky_view(sky_url, sop_url, band=None, occ=None, pointing=0) -> SkyView:
    from astropy.wcs import WCS

    from ecpi_beam.kernels.sky_analysis import restored_snr

    with _open(sky_url) as hdul:
        name = _hdu_name(hdul, "SNR", band, occ, pointing)
        raw = np.array(hdul[name].data, dtype=float)
        header = hdul[name].header
        cleaned_name = name.replace("SNR_", "RESIDUAL_SNR_", 1)
        residual = (np.array(hdul[cleaned_name].data, dtype=float) if cleaned_name in hdul
                    else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # products written before DATEREF was added
        wcs = WCS(header)
    sources = []
    if sop_url:
        rows = read_sources(sop_url)
        names = rows.colnames
        band_name = header.get("BAND")
        if "BAND" in names and band_name:
            rows = rows[np.array([cell_text(b) == band_name for b in rows["BAND"]], dtype=bool)]
        if "OCC_TYPE" in names and header.get("OCC_TYPE"):
            rows = rows[np.array([cell_text(o) == header["OCC_TYPE"] for o in rows["OCC_TYPE"]],
                                 dtype=bool)]
        if "PNT_ID" in names:  # SKY_X, SKY_Y are pixels of their own pointing's image
            rows = rows[np.asarray(rows["PNT_ID"]) == pointing]
        sources = [(float(row["RA"]), float(row["DEC"]), source_label(row, names),
                    source_kind(row, names), float(row["SNR"]), float(row["SKY_X"]) - 1.0,
                    float(row["SKY_Y"]) - 1.0) for row in rows]
    if residual is None:  # an older product: the raw image is all there is
        restored = raw
    else:  # SKY_X, SKY_Y: 1-based FITS pixels of the stored image (x the column)
        restored = restored_snr(residual, [s[6] for s in sources], [s[5] for s in sources],
                                [s[4] for s in sources])
    return SkyView(name, restored, raw, residual, wcs, [s[:5] for s in sources])


def draw_sky(fig, position, view: SkyView, injected=()):
    """The cleaned SNR map in RA/Dec (east left), each source marked and named beside its
    mark; `injected`: (name, ra, dec) of a simulation's truth, drawn as dashed circles, its
    name added to the label of the source found there (or beside the circle if none)."""
    from astropy.visualization import AsinhStretch, ImageNormalize

    ax = fig.add_subplot(position, projection=view.wcs)
    peak = float(np.nanmax(view.restored)) if view.restored.size else 5.0
    vmax = max(peak, 10.0)
    # asinh: linear over the noise (-5 to 5 sigma), logarithmic up to the brightest source
    norm = ImageNormalize(vmin=-5.0, vmax=vmax, stretch=AsinhStretch(10.0 / (vmax + 5.0)))
    image = ax.imshow(view.restored, origin="lower", cmap="magma", norm=norm)
    if np.linalg.det(view.wcs.pixel_scale_matrix) > 0:
        ax.invert_xaxis()  # east to the left, as on the sky
    transform = ax.get_transform("icrs")
    for kind, style in MARKERS.items():
        chosen = [source for source in view.sources if source[3] == kind]
        if chosen:
            ax.scatter([s[0] for s in chosen], [s[1] for s in chosen], transform=transform,
                       s=MARK_SIZE, facecolors="none", edgecolors=COLOURS[kind],
                       marker=style["marker"], label=f"{style['label']} ({len(chosen)})")
    from matplotlib.transforms import Bbox

    named = set()
    centre_x = ax.transAxes.transform((0.5, 0.5))[0]
    renderer = fig.canvas.get_renderer()
    mark = MARK_SIZE ** 0.5 * fig.dpi / 72.0 / 2.0 + 2.0  # half a mark, in pixels
    placed = [Bbox.from_extents(x - mark, y - mark, x + mark, y + mark) for x, y in
              (transform.transform((ra, dec)) for ra, dec, *_ in view.sources)]
    for ra, dec, name, kind, snr in sorted(view.sources, key=lambda s: -s[4]):
        truth = next((injected_name for injected_name, ra_in, dec_in in injected
                      if angular_distance_deg(ra, dec, ra_in, dec_in) < INJECTED_MATCH_DEG),
                     None)
        named.add(truth)
        label = f"{name}\nSNR {snr:.0f}" + (f", injected {truth}" if truth else "")
        right_half = transform.transform((ra, dec))[0] > centre_x  # labels stay in the image
        text = ax.annotate(label, (ra, dec), xycoords=transform,
                           xytext=(-11 if right_half else 11, 6), textcoords="offset points",
                           color="white", fontsize=7.5, ha="right" if right_half else "left",
                           arrowprops=dict(arrowstyle="-", color=COLOURS[kind], lw=0.6),
                           bbox=dict(boxstyle="round,pad=0.2", fc="black", ec=COLOURS[kind],
                                     alpha=0.7, lw=0.8))
        _clear_of(text, placed, renderer)
    if injected:
        ax.scatter([ra for _, ra, _ in injected], [dec for _, _, dec in injected],
                   transform=transform, s=420, facecolors="none", edgecolors="white",
                   linestyles="--", linewidths=1.0, label=f"injected ({len(injected)})")
        for name, ra, dec in injected:
            if name not in named:  # an injected source not found: its name, in italics
                ax.annotate(f"{name} (not found)", (ra, dec), xycoords=transform,
                            xytext=(0, -18), textcoords="offset points", color="white",
                            fontsize=7.5, style="italic", ha="center")
    if view.sources or injected:
        ax.legend(loc="upper right", framealpha=0.6, fontsize=8)
    ax.coords.grid(color="white", alpha=0.25, linestyle=":")
    ax.set_xlabel("RA (ICRS)")
    ax.set_ylabel("Dec (ICRS)")
    cleaned = "cleaned SNR, sources restored" if view.residual is not None else "SNR"
    ax.set_title(f"ECL-SKY-IMA {view.name}: {cleaned}", fontsize=10)
    ticks = [tick for tick in (-5, 0, 5, 10, 25, 50, 100, 250, 500, 1000) if tick <= vmax]
    fig.colorbar(image, ax=ax, label="SNR (asinh: linear over the noise)", shrink=0.85,
                 ticks=ticks)
    return ax


def _clear_of(text, placed: list, renderer, tries: int = 12) -> None:
    """Move a label down by its height until it overlaps no mark and no label already placed
    (brightest sources first, so theirs stay by their marks)."""
    from matplotlib.text import Text

    def box():  # the label alone: an Annotation's extent holds its (growing) leader line too
        text.update_positions(renderer)
        return Text.get_window_extent(text, renderer)

    for _ in range(tries):
        extent = box()
        if not any(extent.overlaps(other) for other in placed):
            break
        x, y = text.xyann
        text.xyann = (x, y - extent.height * 72.0 / text.figure.dpi - 3.0)
    placed.append(box())


def draw_noise(fig, position, view: SkyView):
    """Pixel SNR distributions: the raw image (its width is the bright sources' coding noise)
    against the residual (the noise, which should be a unit Gaussian) and N(0, 1)."""
    ax = fig.add_subplot(position)
    bins = np.linspace(-12.0, 12.0, 97)
    centre = 0.5 * (bins[1:] + bins[:-1])
    measured = view.raw != 0
    for values, label, colour in ((view.raw, "raw SNR", "tab:orange"),
                                  (view.residual, "residual SNR", "tab:blue")):
        if values is None:
            continue
        values = values[measured & np.isfinite(values)]
        std = float(np.std(values)) if values.size else float("nan")
        ax.hist(np.clip(values, bins[0], bins[-1]), bins=bins, density=True, histtype="step",
                color=colour, lw=1.5, label=f"{label}: std {std:.2f}")
    ax.plot(centre, np.exp(-0.5 * centre ** 2) / np.sqrt(2.0 * np.pi), "k:", label="N(0, 1)")
    ax.set_yscale("log")
    ax.set_ylim(1e-5, 1.0)
    ax.set_xlabel("pixel SNR (clipped at +-12)")
    ax.set_ylabel("fraction of the coded pixels")
    ax.set_title("noise: raw image against residual", fontsize=10)
    ax.legend(fontsize=8)
    return ax


def sky_png(sky_url, sop_url, band, occ, png, injected=(), pointing=0):
    """The sky quick-look: the cleaned SNR map with the sources named, and the noise panel."""
    plt = _pyplot()
    view = sky_view(sky_url, sop_url, band, occ, pointing)
    fig = plt.figure(figsize=(15, 6.5))
    grid = fig.add_gridspec(1, 2, width_ratios=(1.35, 1.0))
    draw_sky(fig, grid[0], view, injected)
    draw_noise(fig, grid[1], view)
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return view


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


def _pointing_part(pointing: int) -> str:
    return f"_P{pointing}" if pointing else ""


def quicklook(directory: str, out: Path, band=None, occ=None) -> list:
    """Make the PNGs (and missing region files) of every observation in `directory`."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for obs_id, products in sorted(find_products(directory).items()):
        get = products.get
        detector = get("ECL-DET-IMA") or get("ECL-DET-UBC")
        if detector:  # one PNG per stable pointing: `_P<k>` after the first's name
            for pointing in pointings_of(detector, "COUNTS" if get("ECL-DET-IMA") else "UBC"):
                made.append(out / f"{obs_id}_detector{_pointing_part(pointing)}.png")
                detector_png(get("ECL-DET-IMA"), get("ECL-DET-UBC"), band, occ, made[-1],
                             pointing)
        if get("ECL-SKY-IMA"):
            for pointing in pointings_of(get("ECL-SKY-IMA"), "SNR"):
                made.append(out / f"{obs_id}_sky_snr{_pointing_part(pointing)}.png")
                sky_png(get("ECL-SKY-IMA"), get("ECL-SOP-IMA"), band, occ, made[-1],
                        pointing=pointing)
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
    parser.add_argument("--band", help="PI band of the images, e.g. 13-60 (default: the first "
                                       "one, of the occultation type given)")
    parser.add_argument("--occ", help="occultation type, NEO, PEO or TEO (default: the first "
                                      "one, of the band given)")
    args = parser.parse_args(argv)
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
