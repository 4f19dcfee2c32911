"""FITS products (ICD section 4): names, standard keywords and the one atomic writer.

Every product is written by `write_product`: the HDUs get the observation keywords, each with
a comment, CHECKSUM/DATASUM are added, and the file is written under a temporary name and moved
into place, so a reader never sees a partial product and a failed run leaves none.
"""
from __future__ import annotations

import datetime

from astropy.io import fits

import ecpi_beam
from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs

ORIGIN = "ecpi_beam"
KEYWORD_COMMENTS = {
    "TELESCOP": "mission", "INSTRUME": "instrument", "OBS_ID": "observation identifier",
    "TSTART": "[s] start time, TT seconds since MJDREF", "TSTOP": "[s] stop time",
    "MJDREFI": "integer part of the MJD of time zero", "MJDREFF": "fractional part of MJDREF",
    "TIMESYS": "time system", "TIMEUNIT": "unit of TSTART, TSTOP and TIME",
    "TIMEREF": "times are those at the spacecraft", "CREATOR": "software and its version",
    "DATE": "UTC date this file was written", "ORIGIN": "who made this file",
    "PARHASH": "sha256 (short) of the pipeline parameters", "FILENAME": "name of this file",
    "CALDBHSH": "sha256 (short) of the CALDB manifest used",
    "PRODUCT": "ECPI product name", "BAND": "PI band, inclusive channel range",
    "PI_MIN": "first PI channel of the band", "PI_MAX": "last PI channel of the band",
    "E_MIN": "[keV] lower energy of the band", "E_MAX": "[keV] upper energy of the band",
    "OCC_TYPE": "Earth occultation type (NEO, PEO or TEO)",
}
_REQUIRED_OBSERVATION_KEYWORDS = ("OBS_ID", "TSTART", "TSTOP")
# A products stamp is 'PARHASH' or 'PARHASH' + STAMP_SEPARATOR + 'CALDBHSH' (campaign.py):
# it travels to every writer as the one fingerprint string.
STAMP_SEPARATOR = "+"


def product_url(working_out: str, product: str, obs_id: str) -> str:
    """'<working_out>/<PRODUCT>_<OBS_ID>.fits', confined to working_out (ICD section 5)."""
    return fs.inside(working_out, f"{product}_{obs_id}.fits")


def _with_comment(key: str, value):
    return value if isinstance(value, tuple) else (value, KEYWORD_COMMENTS.get(key, ""))


def utc_now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def standard_keywords(product: str, obs_keywords: dict, params_fingerprint: str) -> dict:
    """The ICD keywords every HDU of a product carries: {KEY: (value, comment)}.

    `obs_keywords` is the event file's primary header (OBS_ID, TSTART, TSTOP, MJDREF...);
    `params_fingerprint` is Params.fingerprint() or a products stamp (PARHASH+CALDBHSH).
    """
    params_fingerprint, _, caldb_fingerprint = params_fingerprint.partition(STAMP_SEPARATOR)
    missing = [key for key in _REQUIRED_OBSERVATION_KEYWORDS if key not in obs_keywords]
    if missing:
        raise EcpiError(f"{product}: the observation keywords lack {', '.join(missing)} "
                        "(expected in the event file's primary header)")
    values = {
        "TELESCOP": "SVOM", "INSTRUME": "ECLAIRs",
        "OBS_ID": str(obs_keywords["OBS_ID"]),
        "TSTART": float(obs_keywords["TSTART"]), "TSTOP": float(obs_keywords["TSTOP"]),
        "MJDREFI": int(obs_keywords.get("MJDREFI", instrument.MJDREFI)),
        "MJDREFF": float(obs_keywords.get("MJDREFF", instrument.MJDREFF)),
        "TIMESYS": str(obs_keywords.get("TIMESYS", instrument.TIMESYS)),
        "TIMEUNIT": str(obs_keywords.get("TIMEUNIT", "s")),
        "CREATOR": ecpi_beam.CREATOR, "DATE": utc_now_iso(), "ORIGIN": ORIGIN,
        "PRODUCT": product, "PARHASH": params_fingerprint,
    }
    if caldb_fingerprint:
        values["CALDBHSH"] = caldb_fingerprint
    return {key: _with_comment(key, value) for key, value in values.items()}


def band_keywords(band: tuple[int, int], occ: str) -> dict:
    """Keywords naming the (band, occultation type) an HDU was made for."""
    lo, hi = int(band[0]), int(band[1])
    e_min, e_max = instrument.band_energy_range((lo, hi))
    values = {"BAND": instrument.band_name((lo, hi)), "PI_MIN": lo, "PI_MAX": hi,
              "E_MIN": round(e_min, 6), "E_MAX": round(e_max, 6), "OCC_TYPE": str(occ)}
    return {key: _with_comment(key, value) for key, value in values.items()}


def apply_keywords(header: fits.Header, keywords: dict, overwrite: bool = False) -> None:
    """Set {KEY: value or (value, comment)} in a header; by default keep values it has."""
    for key, value in keywords.items():
        if overwrite or key not in header:
            header[key] = _fitting(_with_comment(key, value))


def _fitting(value_comment):
    """Drop a comment that would not fit the 80-character card (a long FILENAME or OBS_ID):
    astropy would truncate it with a warning."""
    value, comment = value_comment
    if isinstance(value, str) and 10 + max(len(value) + 2, 20) + 3 + len(comment) > 80:
        return value, ""
    return value, comment


def write_product(url: str, hdus: list, keywords: dict) -> str:
    """Write HDUs as one FITS file at `url`, atomically; returns `url`.

    A PrimaryHDU is added in front if the list does not start with one. `keywords` go into
    every header that does not already set them (an HDU's own TSTART, BAND... win), with
    FILENAME and DATE added. Overwrites an existing product.
    """
    hdus = list(hdus)
    if not hdus or not isinstance(hdus[0], fits.PrimaryHDU):
        hdus.insert(0, fits.PrimaryHDU())
    keywords = dict(keywords)
    keywords.setdefault("DATE", utc_now_iso())
    keywords["FILENAME"] = fs.basename(url)
    for hdu in hdus:
        apply_keywords(hdu.header, keywords)
    with fs.atomic_write(url) as stream:
        fits.HDUList(hdus).writeto(stream, checksum=True, output_verify="exception")
    return url
