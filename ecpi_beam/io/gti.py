"""OGIP good-time-interval (GTI) extensions (OGIP/93-003, HDUCLAS1 = 'GTI')."""
from __future__ import annotations

import numpy as np
from astropy.io import fits

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.io import events

# The ICD time reference, as OGIP/93-003 keywords of every table with a time column
ICD_TIME_KEYWORDS = {
    "TIMEZERO": (0.0, "[s] time offset"),
    "MJDREFI": (instrument.MJDREFI, "integer part of the MJD of time zero"),
    "MJDREFF": (instrument.MJDREFF, "fractional part of MJDREF"),
    "TIMESYS": (instrument.TIMESYS, "time system"),
    "TIMEUNIT": ("s", "unit of the time columns"),
}


def gti_hdu(intervals, extname: str = "GTI", keywords: dict | None = None) -> fits.BinTableHDU:
    """A START/STOP table of good time; ONTIME is the summed length of the intervals.

    `keywords` ({KEY: value or (value, comment)}) are set first; TSTART/TSTOP default to the
    span of the intervals, MJDREF/TIMESYS to the ICD's.
    """
    intervals = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    if np.any(intervals[:, 1] < intervals[:, 0]):
        raise ValueError(f"GTI {extname}: an interval ends before it starts")
    columns = [fits.Column(name="START", format="D", unit="s", array=intervals[:, 0]),
               fits.Column(name="STOP", format="D", unit="s", array=intervals[:, 1])]
    hdu = fits.BinTableHDU.from_columns(columns, name=extname)
    header = hdu.header
    for key, value in (keywords or {}).items():
        header[key] = value
    span = (float(intervals[:, 0].min()), float(intervals[:, 1].max())) if len(intervals) \
        else (0.0, 0.0)
    defaults = {
        "HDUCLASS": ("OGIP", "format conforms to OGIP standards"),
        "HDUCLAS1": ("GTI", "table of good time intervals"),
        "HDUCLAS2": ("STANDARD", "standard GTI"),
        **ICD_TIME_KEYWORDS,
        "TSTART": (span[0], "[s] start time"),
        "TSTOP": (span[1], "[s] stop time"),
    }
    for key, value in defaults.items():
        if key not in header:
            header[key] = value
    header["ONTIME"] = (float(np.sum(intervals[:, 1] - intervals[:, 0])),
                        "[s] sum of the good time intervals")
    return hdu


def read_gti(url: str, extname: str = "GTI") -> np.ndarray:
    """The (n, 2) START/STOP intervals of a GTI extension."""
    table, _ = events.read_table(url, extname)
    for name in ("START", "STOP"):
        if name not in (table.dtype.names or ()):
            raise EcpiError(f"{url}: extension {extname} has no column {name}")
    return np.column_stack([table["START"], table["STOP"]]).astype(np.float64).reshape(-1, 2)
