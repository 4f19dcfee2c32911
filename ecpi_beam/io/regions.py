"""DS9 region files of the ECL-SOP-IMA source lists (written with the `regions` package).

One circle per source row, in ICRS, of radius its 90 % error (ERR_RAD), labelled with its
name and band. Known sources (KNOWN_NAME not empty) are green, new ones (NEW true) red, the
others cyan, when the table has those columns. `ECL-SOP-IMA_<OBS_ID>.reg` sits beside the
product; ds9 loads it with `ds9 ECL-SKY-IMA_<OBS_ID>.fits -regions ECL-SOP-IMA_<OBS_ID>.reg`.
"""
from __future__ import annotations

from astropy.io import fits
from astropy.table import Table

from ecpi_beam.io import fs

SOURCES_EXTENSION = "SOURCES"
MIN_RADIUS_ARCMIN = 1.0  # a circle ds9 can show at the scale of a whole sky image
COLOURS = {"known": "green", "new": "red", "other": "cyan"}


def regions_url(sop_url: str) -> str:
    """'.../ECL-SOP-IMA_<OBS_ID>.fits' -> '.../ECL-SOP-IMA_<OBS_ID>.reg'."""
    return sop_url[:-len(".fits")] + ".reg" if sop_url.endswith(".fits") else sop_url + ".reg"


def read_sources(sop_url: str) -> Table:
    """The SOURCES table of an ECL-SOP-IMA file (logical and string columns decoded)."""
    with fs.open_file(sop_url, "rb") as handle, fits.open(handle) as hdul:
        return Table(hdul[SOURCES_EXTENSION].data, masked=False, copy=True)


def cell_text(value) -> str:
    """A FITS string cell as text (bytes decoded, blanks stripped)."""
    return (value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)).strip()


def source_kind(row, names) -> str:
    """'known', 'new' or 'other' (the ECL-SOP-IMA KNOWN_NAME and NEW columns, when present)."""
    if "KNOWN_NAME" in names and cell_text(row["KNOWN_NAME"]):
        return "known"
    if "NEW" in names and bool(row["NEW"]):
        return "new"
    return "other"


def source_label(row, names) -> str:
    name = next((cell_text(row[column]) for column in ("KNOWN_NAME", "NAME")
                 if column in names and cell_text(row[column])), "")
    band = cell_text(row["BAND"]) if "BAND" in names else ""
    return " ".join(part for part in (name, band, f"SNR {float(row['SNR']):.1f}") if part)


def source_regions(table):
    """regions.Regions of a SOURCES table."""
    import astropy.units as u  # imported here: astropy.coordinates and regions take 0.8 s
    from astropy.coordinates import SkyCoord
    from regions import CircleSkyRegion, Regions

    names = table.colnames
    regions = []
    for row in table:
        radius = max(float(row["ERR_RAD"]), MIN_RADIUS_ARCMIN) if "ERR_RAD" in names \
            else MIN_RADIUS_ARCMIN
        region = CircleSkyRegion(SkyCoord(float(row["RA"]), float(row["DEC"]), unit="deg",
                                          frame="icrs"), radius * u.arcmin)
        region.meta["text"] = source_label(row, names)
        region.visual["color"] = COLOURS[source_kind(row, names)]
        regions.append(region)
    return Regions(regions)


def write_regions(sop_url: str, url: str | None = None) -> str:
    """Write the DS9 region file of an ECL-SOP-IMA product (atomically); returns its URL."""
    url = url or regions_url(sop_url)
    text = source_regions(read_sources(sop_url)).serialize(format="ds9")
    with fs.atomic_write(url) as stream:
        stream.write(text.encode("utf-8"))
    return url
