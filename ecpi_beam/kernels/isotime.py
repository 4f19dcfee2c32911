"""Mission times as ISO 8601 dates, through ERFA (the library under astropy.time).

The products' DATE-OBS / DATE-END and the alerts' UTC times are calendar dates of MJDs; ERFA
gives them exactly as astropy.time does (leap seconds included) without astropy.time's fifth
of a second of imports on every run. tests/test_isotime.py compares both.
"""
from __future__ import annotations

import contextlib
import warnings

import erfa

from ecpi_beam import instrument

MJD_ZERO_JD = 2400000.5
ERFA_SCALES = {"tt": "TT", "tai": "TAI", "utc": "UTC", "tdb": "TDB", "tcg": "TCG", "tcb": "TCB",
               "ut1": "UT1"}


@contextlib.contextmanager
def _beyond_known_leap_seconds_quietly():
    """ERFA's "dubious year" past the leap seconds it knows, which astropy silences too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", erfa.ErfaWarning)
        yield


def _formatted(scale: str, jd1: float, jd2: float) -> str:
    with _beyond_known_leap_seconds_quietly():
        year, month, day, (hour, minute, second, millisecond) = erfa.d2dtf(scale, 3, jd1, jd2)
    return (f"{int(year):04d}-{int(month):02d}-{int(day):02d}T{int(hour):02d}:"
            f"{int(minute):02d}:{int(second):02d}.{int(millisecond):03d}")


def mjd_isot(mjd: float, timesys: str) -> str:
    """The date of an MJD in its own time scale (TT, TAI, UTC...), to the millisecond."""
    scale = ERFA_SCALES.get(timesys.lower())
    if scale is None:
        raise ValueError(f"unknown time scale {timesys!r}: expected one of "
                         f"{', '.join(sorted(ERFA_SCALES))}")
    return _formatted(scale, MJD_ZERO_JD, float(mjd))


def tt_mjd_utc_isot(mjd_tt: float) -> str:
    """The UTC date of an MJD in TT (TT -> TAI -> UTC, leap seconds included)."""
    with _beyond_known_leap_seconds_quietly():
        utc1, utc2 = erfa.taiutc(*erfa.tttai(MJD_ZERO_JD, float(mjd_tt)))
    return _formatted("UTC", utc1, utc2)


def mission_time_utc_isot(time_s: float, mjdref: float | None = None) -> str:
    """The UTC date of a mission time (TT seconds from MJDREF; the ICD's by default)."""
    mjdref = instrument.MJDREFI + instrument.MJDREFF if mjdref is None else mjdref
    return tt_mjd_utc_isot(mjdref + float(time_s) / 86400.0)
