"""DS9 region files of the ECL-SOP-IMA source lists.

One circle per source row, in ICRS, of radius its 90 % error (ERR_RAD), labelled with its
name and band. Known sources (KNOWN_NAME not empty) are green, new ones (NEW true) red, the
others cyan, when the table has those columns. `ECL-SOP-IMA_<OBS_ID>.reg` sits beside the
product; ds9 loads it with `ds9 ECL-SKY-IMA_<OBS_ID>.fits -regions ECL-SOP-IMA_<OBS_ID>.reg`.

The file is DS9 version 4.1 text (ICRS circles, radius in arcseconds, colour and text per
shape), written directly: the `regions` package, which reads it back in the tests, would
cost a fifth of a second of imports (astropy.coordinates) for a few lines of text.
"""
from __future__ import annotations

from astropy.io import fits

from ecpi_beam.io import fs

SOURCES_EXTENSION = "SOURCES"
MIN_RADIUS_ARCMIN = 1.0  # a circle ds9 can show at the scale of a whole sky image
COLOURS = {"known": "green", "new": "red", "other": "cyan"}


def regions_url(sop_url: str) -> str:
    """'.../ECL-SOP-IMA_<OBS_ID>.fits' -> '.../ECL-SOP-IMA_<OBS_ID>.reg'."""
    return sop_url[:-len(".fits")] + ".reg" if sop_url.endswith(".fits") else sop_url + ".reg"


REGION_HEADER = ("# Region file format: DS9 version 4.1\n"
                 "global color=cyan width=1 font=\"helvetica 10 normal roman\"\n"
                 "icrs\n")


def read_sources(sop_url: str):
    """The SOURCES table of an ECL-SOP-IMA file, as an astropy Table."""
    from astropy.table import Table  # imported here: the pipeline's writer does without it

    return Table(_source_records(sop_url), masked=False, copy=True)


def _source_records(sop_url: str):
    with fs.open_file(sop_url, "rb") as handle, fits.open(handle) as hdul:
        return hdul[SOURCES_EXTENSION].data.copy()


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


def region_lines(records, names) -> list[str]:
    """One DS9 circle per source row: ICRS, radius ERR_RAD (at least MIN_RADIUS_ARCMIN)."""
    lines = []
    for row in records:
        radius = max(float(row["ERR_RAD"]), MIN_RADIUS_ARCMIN) if "ERR_RAD" in names \
            else MIN_RADIUS_ARCMIN
        text = source_label(row, names).replace("{", "(").replace("}", ")")
        lines.append(f"circle({float(row['RA']):.8f},{float(row['DEC']):.8f},"
                     f"{radius * 60.0:.4f}\") # color={COLOURS[source_kind(row, names)]} "
                     f"text={{{text}}}")
    return lines


def write_regions(sop_url: str, url: str | None = None) -> str:
    """Write the DS9 region file of an ECL-SOP-IMA product (atomically); returns its URL."""
    url = url or regions_url(sop_url)
    records = _source_records(sop_url)
    names = [name.upper() for name in records.columns.names]
    text = REGION_HEADER + "".join(line + "\n" for line in region_lines(records, names))
    with fs.atomic_write(url) as stream:
        stream.write(text.encode("utf-8"))
    return url
