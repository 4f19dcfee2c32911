"""HDU builders of the SPEX products (ICD section 4): ECL-SPS-S1 spectra and ECL-LCS-S1 light
curves, and the RMF and ARF files each spectrum names (docs/spex.md).

- ECL-SPS-S1: OGIP PHA type I (OGIP/92-007), HDUCLAS2 = 'NET': mask-weighted counts in COUNTS
  (real, background removed by the balancing) with STAT_ERR and POISSERR = F, EXPOSURE,
  BACKSCAL = 1, AREASCAL = 1, RESPFILE and ANCRFILE naming the files written beside it.
- the RMF (OGIP CAL/GEN/92-002) is the CALDB matrix on the spectrum's channel groups; the ARF
  is the CALDB on-axis ARF x IRF for the source's off-axis angle x its open-area fraction.
- ECL-LCS-S1: OGIP/93-003 light curve, extension RATE (TIME at bin centre, RATE, ERROR,
  FRACEXP; TIMEDEL, TIMEPIXR = 0.5) then GTI, times in the ICD reference (TT seconds from
  MJDREFI + MJDREFF, TIMEREF = 'LOCAL').
"""
from __future__ import annotations

import numpy as np
from astropy.io import fits

from ecpi_beam.caldb.generate import rmf_columns
from ecpi_beam.io.gti import ICD_TIME_KEYWORDS, gti_hdu

OGIP_TIME_KEYWORDS = {
    "TIMEREF": ("LOCAL", "times are those at the spacecraft"),
    "TASSIGN": ("SATELLITE", "where times are assigned"),
    **ICD_TIME_KEYWORDS,
}


def _set(header, cards: dict):
    for key, value in cards.items():
        header[key] = value


def source_keywords(name: str, ra: float, dec: float, off_axis_deg: float) -> dict:
    return {"OBJECT": (name, "source name"), "RA_OBJ": (float(ra), "[deg] source RA"),
            "DEC_OBJ": (float(dec), "[deg] source Dec"),
            "OFFAXIS": (float(off_axis_deg), "[deg] source off-axis angle")}


def spectrum_hdus(spectrum, respfile: str, ancrfile: str, keywords: dict) -> list:
    """ECL-SPS-S1: the SPECTRUM extension (PHA type I) then the good time."""
    n = len(spectrum.counts)
    columns = [fits.Column(name="CHANNEL", format="J", array=np.arange(n, dtype=np.int32)),
               fits.Column(name="COUNTS", format="E", unit="count", array=spectrum.counts),
               fits.Column(name="STAT_ERR", format="E", unit="count", array=spectrum.stat_err),
               fits.Column(name="QUALITY", format="I", array=spectrum.quality)]
    hdu = fits.BinTableHDU.from_columns(columns, name="SPECTRUM")
    _set(hdu.header, {
        "HDUCLASS": ("OGIP", "format conforms to OGIP standard"),
        "HDUCLAS1": ("SPECTRUM", "PHA dataset"), "HDUCLAS2": ("NET", "background removed"),
        "HDUCLAS3": ("COUNT", "COUNTS, not RATE"), "HDUCLAS4": ("TYPE:I", "one spectrum"),
        "HDUVERS": ("1.2.1", "version of the format"),
        "TLMIN1": (0, "first channel"), "TLMAX1": (n - 1, "last channel"),
        "CHANTYPE": ("PI", "channel type"), "DETCHANS": (n, "number of channels"),
        "EXPOSURE": (float(spectrum.exposure), "[s] good time in the occultation class"),
        "POISSERR": (False, "errors in STAT_ERR (weighted counts)"),
        "SYS_ERR": (0.0, "no systematic error"), "GROUPING": (0, "no grouping"),
        "BACKSCAL": (1.0, "background removed by the mask balancing"),
        "AREASCAL": (1.0, "area scaling"), "CORRSCAL": (0.0, "no correction file"),
        "BACKFILE": ("none", "no background file"), "CORRFILE": ("none", "no correction file"),
        "RESPFILE": (respfile, "RMF"),
        "ANCRFILE": (ancrfile, "ARF"),
        "FILTER": ("NONE", "filter"), "PIGROUP": (int(spectrum.last_pi[0] + 1),
                                                   "PI channels per spectral channel"),
        **keywords})
    return [hdu]


def rmf_hdus(rmf) -> list:
    matrix_columns, channels, n_groups, n_elements = rmf_columns(rmf)
    n = len(rmf.e_min)
    common = {"HDUCLASS": ("OGIP", "format conforms to OGIP standard"),
              "HDUCLAS1": ("RESPONSE", "dataset relates to spectral response"),
              "CHANTYPE": ("PI", "channel type"), "DETCHANS": (n, "number of channels"),
              "FILTER": ("NONE", "filter")}
    matrix = fits.BinTableHDU.from_columns(matrix_columns, name="MATRIX")
    _set(matrix.header, {**common, "HDUCLAS2": ("RSP_MATRIX", ""), "HDUCLAS3": ("REDIST", ""),
                         "HDUVERS": ("1.3.0", "version of the format"),
                         "TLMIN4": (0, "first channel number"),
                         "TLMAX4": (n - 1, "last channel number"),
                         "NUMGRP": (n_groups, "total number of channel groups"),
                         "NUMELT": (n_elements, "total number of matrix elements")})
    ebounds = fits.BinTableHDU.from_columns(channels, name="EBOUNDS")
    _set(ebounds.header, {**common, "HDUCLAS2": ("EBOUNDS", ""),
                          "HDUVERS": ("1.2.0", "version of the format"),
                          "TLMIN1": (0, "first channel number"),
                          "TLMAX1": (n - 1, "last channel number")})
    return [matrix, ebounds]


def arf_hdus(arf, specresp, keywords: dict) -> list:
    columns = [fits.Column("ENERG_LO", "D", unit="keV", array=arf.energ_lo),
               fits.Column("ENERG_HI", "D", unit="keV", array=arf.energ_hi),
               fits.Column("SPECRESP", "E", unit="cm**2", array=np.asarray(specresp))]
    hdu = fits.BinTableHDU.from_columns(columns, name="SPECRESP")
    _set(hdu.header, {"HDUCLASS": ("OGIP", "format conforms to OGIP standard"),
                      "HDUCLAS1": ("RESPONSE", "dataset relates to spectral response"),
                      "HDUCLAS2": ("SPECRESP", "effective area"),
                      "HDUVERS": ("1.1.0", "version of the format"), **keywords})
    return [hdu]


def light_curve_hdus(curve, gti, keywords: dict) -> list:
    """ECL-LCS-S1: RATE (first extension, as OGIP readers expect) and GTI."""
    columns = [fits.Column(name="TIME", format="D", unit="s", array=curve.time),
               fits.Column(name="RATE", format="E", unit="count/s", array=curve.rate),
               fits.Column(name="ERROR", format="E", unit="count/s", array=curve.error),
               fits.Column(name="FRACEXP", format="E", array=curve.fracexp)]
    hdu = fits.BinTableHDU.from_columns(columns, name="RATE")
    _set(hdu.header, {
        "HDUCLASS": ("OGIP", "format conforms to OGIP standard"),
        "HDUCLAS1": ("LIGHTCURVE", "light curve dataset"),
        "HDUCLAS2": ("NET", "background removed by the balancing"),
        "HDUCLAS3": ("RATE", "RATE = counts/(TIMEDEL FRACEXP)"),
        "TIMEDEL": (float(curve.timedel), "[s] bin width"),
        "TIMEPIXR": (0.5, "TIME is the bin centre"),
        **OGIP_TIME_KEYWORDS, **keywords})
    hdu.header.comments["TTYPE1"] = "bin centre"
    return [hdu, gti_hdu(gti, "GTI", keywords)]
