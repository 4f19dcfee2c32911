"""FITS writers of the input triplet (ICD section 2), the EVENTS table streamed in bounded memory.

`EventFileWriter` writes the primary HDU and the EVENTS header with NAXIS2 = 0, appends rows as
big-endian bytes chunk by chunk, then pads the data to 2880 bytes, appends the GTI extension,
patches NAXIS2 in place and renames the temporary file: memory never holds more than a chunk.
"""
from __future__ import annotations

import io
import os
from datetime import datetime, timezone

import numpy as np
from astropy.io import fits
from astropy.time import Time

import ecpi_beam
from ecpi_beam import instrument

FITS_BLOCK = 2880
EVENT_COLUMNS = (("TIME", "D", ">f8", "s"), ("IDET", "B", "u1", None), ("JDET", "B", "u1", None),
                 ("PHA", "I", ">i2", "chan"), ("FLAG", "B", "u1", None))
EVENT_FILE_DTYPE = np.dtype([(name, dt) for name, _, dt, _ in EVENT_COLUMNS])
CREATOR = f"{ecpi_beam.CREATOR} (simulator)"


def mjd_tt_to_isot_utc(time_tt: float) -> str:
    mjd = instrument.MJDREFI + instrument.MJDREFF + time_tt / 86400.0
    return Time(mjd, format="mjd", scale="tt").utc.isot[:19]


def common_keywords(obs_id: str, tstart: float, tstop: float, instrume: str | None = None):
    """Keywords every triplet header carries (ICD section 2), as (key, value, comment)."""
    instrument_card = [("INSTRUME", instrume, "instrument")] if instrume else []
    return [("TELESCOP", "SVOM", "mission")] + instrument_card + [
        ("OBS_ID", obs_id, "observation identifier"),
        ("TSTART", float(tstart), "[s] start time, TT since MJDREF"),
        ("TSTOP", float(tstop), "[s] stop time, TT since MJDREF"),
        ("DATE-OBS", mjd_tt_to_isot_utc(tstart), "UTC start"),
        ("DATE-END", mjd_tt_to_isot_utc(tstop), "UTC stop"),
        ("MJDREFI", instrument.MJDREFI, "reference MJD, integer part"),
        ("MJDREFF", instrument.MJDREFF, "reference MJD, fraction (TT)"),
        ("TIMESYS", instrument.TIMESYS, "time system"),
        ("TIMEUNIT", "s", "unit of time keywords"),
        ("TIMEREF", "LOCAL", "no barycentric correction"),
        ("CREATOR", CREATOR, "software"),
        ("DATE", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "file creation (UTC)"),
    ]


def primary_hdu(keywords) -> fits.PrimaryHDU:
    hdu = fits.PrimaryHDU()
    for key, value, comment in keywords:
        hdu.header[key] = (value, comment)
    return hdu


def table_hdu(name: str, columns: list[fits.Column], keywords) -> fits.BinTableHDU:
    hdu = fits.BinTableHDU.from_columns(columns, name=name)
    for key, value, comment in keywords:
        hdu.header[key] = (value, comment)
    return hdu


def gti_hdu(intervals, keywords) -> fits.BinTableHDU:
    intervals = np.asarray(intervals, float).reshape(-1, 2)
    return table_hdu("GTI", [fits.Column("START", "D", "s", array=intervals[:, 0]),
                             fits.Column("STOP", "D", "s", array=intervals[:, 1])], keywords)


def write_hdus_atomically(path: str, hdus) -> None:
    tmp = f"{path}.part"
    fits.HDUList(list(hdus)).writeto(tmp, overwrite=True)
    os.replace(tmp, path)


def _extension_bytes(hdu) -> bytes:
    """The bytes of one extension HDU as it would appear in a file."""
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()[FITS_BLOCK:]  # an empty primary HDU is one block


class EventFileWriter:
    """Streams an ECL-EVT-SEC file: `append(chunk)` any number of times, then `close(gti)`."""

    def __init__(self, path: str, keywords):
        self.path = path
        self._tmp = f"{path}.part"
        self._keywords = keywords
        self.n_rows = 0
        columns = [fits.Column(name, form, unit=unit, array=np.zeros(0, dtype=dt))
                   for name, form, dt, unit in EVENT_COLUMNS]
        events = table_hdu("EVENTS", columns, keywords)
        events.header["TIMEDEL"] = (instrument.TIME_RESOLUTION_S, "[s] time resolution")
        for column, top in ((2, instrument.N_PIX - 1), (3, instrument.N_PIX - 1),
                            (4, instrument.N_PHA - 1)):  # legal ranges of IDET, JDET, PHA
            events.header[f"TLMIN{column}"] = 0
            events.header[f"TLMAX{column}"] = top
        header = events.header.tostring().encode("ascii")
        self._file = open(self._tmp, "wb")
        primary = io.BytesIO()
        primary_hdu(keywords).writeto(primary)
        self._file.write(primary.getvalue())
        # NAXIS2 is patched at the end: remember where its 80-character card sits
        self._naxis2_at = self._file.tell() + header.index(b"NAXIS2  =")
        self._file.write(header)

    def append(self, events) -> None:
        """Append rows, in file order: a structured array or a dict of the EVENT columns."""
        rows = np.empty(len(events["TIME"]), dtype=EVENT_FILE_DTYPE)
        for name in EVENT_FILE_DTYPE.names:
            rows[name] = events[name]
        self._file.write(rows.tobytes())
        self.n_rows += len(rows)

    def close(self, gti_intervals) -> None:
        data_bytes = self.n_rows * EVENT_FILE_DTYPE.itemsize
        self._file.write(b"\0" * (-data_bytes % FITS_BLOCK))
        self._file.write(_extension_bytes(gti_hdu(gti_intervals, self._keywords)))
        self._file.seek(self._naxis2_at)
        self._file.write(fits.Card("NAXIS2", self.n_rows, "number of rows in table")
                         .image.encode("ascii"))
        self._file.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._file.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)
