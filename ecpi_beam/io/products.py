"""FITS products (ICD section 4): names, standard keywords and the one atomic writer.

Every product is written by `write_product`: the HDUs get the observation keywords (time,
pointing, OGIP classes; see `finish_header`), each with a comment, CHECKSUM/DATASUM are added,
and the file is written under a temporary name and moved into place, so a reader never sees a
partial product and a failed run leaves none. ECL-EVT-CAL, streamed from parts, goes through
the same `finish_header` and gets its checksums from `FitsChecksum` (docs/products.md).
"""
from __future__ import annotations

import datetime
import re

import numpy as np
from astropy.io import fits

import ecpi_beam
from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fitsfile, fs
from ecpi_beam.io.fitsfile import FitsChecksum, encode_checksum  # noqa: F401  (their users')
from ecpi_beam.kernels import isotime

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
    "DATE-OBS": "start of the observation, in TIMESYS",
    "DATE-END": "end of the observation, in TIMESYS",
    "MJD-OBS": "[d] MJD of the start, in TIMESYS", "MJD-END": "[d] MJD of the end, in TIMESYS",
    "DATEREF": "time zero (MJDREF) as a date, in TIMESYS",
    "TIMEZERO": "[s] offset to add to the times", "HDUVERS": "version of the format of this HDU",
    "RA_PNT": "[deg] boresight RA (ICRS) of the reference attitude",
    "DEC_PNT": "[deg] boresight Dec (ICRS) of the reference attitude",
    "PA_PNT": "[deg] position angle of LOS +Z, north through east",
    "RADESYS": "frame of the sky coordinates", "EQUINOX": "[yr] equinox of the sky coordinates",
    "HDUCLASS": "format conforms to OGIP standards", "HDUCLAS1": "OGIP class of this HDU",
    "HDUCLAS2": "OGIP sub-class of this HDU", "CHECKSUM": "HDU checksum (FITS 4.0 appendix J)",
    "DATASUM": "data unit checksum", "EXTNAME": "name of this HDU", "BUNIT": "unit of the data",
    "EXPOSURE": "[s] good time", "ONTIME": "[s] sum of the good time intervals",
    "TIMEDEL": "[s] time resolution", "LONPOLE": "[deg] native longitude of the celestial pole",
    "WCSAXES": "number of world coordinate axes", "BZERO": "offset of the stored values",
    "BSCALE": "scale of the stored values", "EXTEND": "extensions may follow",
}
# comments of indexed keywords (TTYPE3, CRVAL1, ...) by their stem
INDEXED_KEYWORD_COMMENTS = {
    "TTYPE": "name of column {n}", "TFORM": "format of column {n}", "TUNIT": "unit of column {n}",
    "TLMIN": "minimum legal value of column {n}", "TLMAX": "maximum legal value of column {n}",
    "TDIM": "dimensions of column {n}", "TNULL": "null value of column {n}",
    "TZERO": "offset of column {n}", "TSCAL": "scale of column {n}",
    "CTYPE": "projection of axis {n}", "CUNIT": "unit of axis {n}",
    "CRPIX": "reference pixel on axis {n}", "CRVAL": "[deg] world coordinate at CRPIX",
    "NAXIS": "length of axis {n}", "BKGPAR": "background model term {n}",
}
CD_COMMENT = "[deg/pixel] WCS transformation matrix"
HDUVERS = "1.0.0"
# OGIP classes of image extensions by EXTNAME prefix (OGIP/94-006, "image" HDUCLAS2 values)
IMAGE_CLASSES = {
    "COUNTS": "TOTAL", "UBC": "NET", "BACKGROUND": "BKG", "VARIANCE": "VARIANCE",
    "INTENSITY": "NET", "SNR": "SIGNIFICANCE", "RESIDUAL_SNR": "SIGNIFICANCE",
    "PCODE": "EFFICIENCY", "EXPOSURE": "EXPOSURE", "PIXEL_MASK": "DETMASK",
}
OTHER_IMAGE_CLASS = "OTHER"
_REQUIRED_OBSERVATION_KEYWORDS = ("OBS_ID", "TSTART", "TSTOP")
# A products stamp is 'PARHASH' or 'PARHASH' + STAMP_SEPARATOR + 'CALDBHSH' (campaign.py):
# it travels to every writer as the one fingerprint string.
STAMP_SEPARATOR = "+"
MOSAIC_OBS_ID = "MOSAIC"  # the OBS_ID of a campaign's products: <PRODUCT>_MOSAIC.fits (MOSA)


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
    tstart, tstop = float(obs_keywords["TSTART"]), float(obs_keywords["TSTOP"])
    mjdrefi = int(obs_keywords.get("MJDREFI", instrument.MJDREFI))
    mjdreff = float(obs_keywords.get("MJDREFF", instrument.MJDREFF))
    timesys = str(obs_keywords.get("TIMESYS", instrument.TIMESYS))
    values = {
        "TELESCOP": "SVOM", "INSTRUME": "ECLAIRs",
        "OBS_ID": str(obs_keywords["OBS_ID"]),
        "TSTART": tstart, "TSTOP": tstop, "MJDREFI": mjdrefi, "MJDREFF": mjdreff,
        "TIMESYS": timesys, "TIMEUNIT": str(obs_keywords.get("TIMEUNIT", "s")),
        **time_keywords(tstart, tstop, mjdrefi + mjdreff, timesys),
        **{key: obs_keywords[key] for key in POINTING_KEYWORDS if key in obs_keywords},
        "CREATOR": ecpi_beam.CREATOR, "DATE": utc_now_iso(), "ORIGIN": ORIGIN,
        "PRODUCT": product, "PARHASH": params_fingerprint,
    }
    if caldb_fingerprint:
        values["CALDBHSH"] = caldb_fingerprint
    return {key: _with_comment(key, value) for key, value in values.items()}


def _date_in(mjd: float, timesys: str) -> str:
    """ISO 8601 date of an MJD in the time scale `timesys` (TT, TAI, UTC...), to the ms."""
    return isotime.mjd_isot(mjd, timesys)


def time_keywords(tstart: float, tstop: float, mjdref: float, timesys: str) -> dict:
    """DATE-OBS, DATE-END, MJD-OBS, DATEREF (FITS 4.0 section 9.2, all in TIMESYS), TIMEZERO."""
    return {"DATE-OBS": _date_in(mjdref + tstart / 86400.0, timesys),
            "DATE-END": _date_in(mjdref + tstop / 86400.0, timesys),
            "MJD-OBS": round(mjdref + tstart / 86400.0, 9),
            "MJD-END": round(mjdref + tstop / 86400.0, 9),
            "DATEREF": _date_in(mjdref, timesys), "TIMEZERO": 0.0}


POINTING_KEYWORDS = ("RA_PNT", "DEC_PNT", "PA_PNT")


def pointing_keywords(qparam) -> dict:
    """RA_PNT, DEC_PNT, PA_PNT of an attitude (the observation's reference attitude).

    PA_PNT is the position angle of the LOS +Z axis at the boresight, from north through east
    (0 at roll 0, see instrument.quaternion_from_pointing)."""
    matrix = instrument.attitude_matrix(qparam)
    ra, dec = instrument.unit_to_radec(matrix[:, 0])
    east, north = instrument.east_north(float(ra), float(dec))
    z_axis = matrix[:, 2]
    angle = float(np.degrees(np.arctan2(z_axis @ east, z_axis @ north))) % 360.0
    return {"RA_PNT": round(float(ra), 6), "DEC_PNT": round(float(dec), 6),
            "PA_PNT": round(angle, 6)}


def pointing_index(value) -> int:
    """The stable pointing (0, 1, ...) a keyed result was made on: its `pointing`
    (kernels.timeline.Pointing), None when its observation holds one pointing."""
    pointing = getattr(value, "pointing", None)
    return 0 if pointing is None else int(pointing.index)


def pointing_suffix(value) -> str:
    """What the EXTNAME of a result's HDUs ends with after `_<band>_<occ>`: `_P<k>` for the
    observation's stable pointings after the first, nothing otherwise (docs/products.md)."""
    index = pointing_index(value)
    return f"_P{index}" if index else ""


def pointing_hdu_keywords(value) -> dict:
    """The keywords naming the pointing of a result's HDUs in an observation of several
    pointings: PNT_ID, its RA_PNT, DEC_PNT, PA_PNT and the TSTART, TSTOP of its imaged good
    time (they win over the observation's); none for an observation of one pointing."""
    pointing = getattr(value, "pointing", None)
    if pointing is None:
        return {}
    where = pointing_keywords(pointing.quaternion)
    return {"PNT_ID": (int(pointing.index), "stable pointing: 0, 1... in time order"),
            "RA_PNT": (where["RA_PNT"], "[deg] boresight RA (ICRS) of this pointing"),
            "DEC_PNT": (where["DEC_PNT"], "[deg] boresight Dec (ICRS) of this pointing"),
            "PA_PNT": (where["PA_PNT"], KEYWORD_COMMENTS["PA_PNT"]),
            "TSTART": (float(pointing.tstart), "[s] start of this pointing's good time"),
            "TSTOP": (float(pointing.tstop), "[s] end of this pointing's good time")}


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


def _card_comment(key: str) -> str:
    if key in KEYWORD_COMMENTS:
        return KEYWORD_COMMENTS[key]
    if re.fullmatch(r"CD\d_\d", key):
        return CD_COMMENT
    match = re.fullmatch(r"([A-Z_]+?)(\d+)", key)
    if match and match.group(1) in INDEXED_KEYWORD_COMMENTS:
        return INDEXED_KEYWORD_COMMENTS[match.group(1)].format(n=match.group(2))
    return ""


def _class_keywords(header: fits.Header, is_image: bool) -> dict:
    """The OGIP class keywords an HDU lacks: images by EXTNAME prefix; tables of sky positions
    get their frame (RADESYS, EQUINOX)."""
    extname = str(header.get("EXTNAME", ""))
    values = {"HDUVERS": HDUVERS} if "HDUCLASS" in header or is_image else {}
    if is_image:
        prefix = next((name for name in sorted(IMAGE_CLASSES, key=len, reverse=True)
                       if extname.startswith(name)), None)
        values.update({"HDUCLASS": "OGIP", "HDUCLAS1": "IMAGE",
                       "HDUCLAS2": IMAGE_CLASSES.get(prefix, OTHER_IMAGE_CLASS)})
    columns = {str(header.get(f"TTYPE{n}", "")).upper()
               for n in range(1, int(header.get("TFIELDS", 0)) + 1)}
    if {"RA", "DEC"} <= columns:
        values.update({"RADESYS": "ICRS", "EQUINOX": 2000.0})
    return values


def finish_header(header: fits.Header, keywords: dict, is_image: bool = False) -> None:
    """Everything write_product adds to one header: the product keywords it does not already
    set, the OGIP class keywords, and a comment on every keyword that has none."""
    apply_keywords(header, keywords)
    apply_keywords(header, _class_keywords(header, is_image))
    for card in header.cards:
        if not card.keyword or card.keyword in ("COMMENT", "HISTORY"):
            continue
        comment = card.comment or _card_comment(card.keyword)
        # a comment too long for the card is cut here, not by astropy with a warning
        room = _comment_room(card.value)
        if comment != card.comment or len(comment) > room:
            header.comments[card.keyword] = comment[:max(room, 0)]


def _comment_room(value) -> int:
    """Characters left for the comment of a fixed-format card holding `value` (FITS 4.0
    4.2: the value field is 20 characters wide from column 11, or a longer quoted string,
    then ' / '); an image made per card to measure it cost a quarter of the writers' time."""
    if isinstance(value, str):
        width = max(len(value.replace("'", "''")) + 2, 20)
    else:
        width = 20
    return fits.Card.length - 10 - width - 3


def write_product(url: str, hdus: list, keywords: dict) -> str:
    """Write HDUs as one FITS file at `url`, atomically; returns `url`.

    A primary HDU is added in front if the list does not start with one. `keywords` go into
    every header that does not already set them (an HDU's own TSTART, BAND... win), with
    FILENAME and DATE added. Overwrites an existing product. The HDUs are io/fitsfile units
    (written directly) or astropy HDUs (written by astropy, the units among them converted).
    """
    hdus = list(hdus)
    direct = all(isinstance(hdu, fitsfile.Unit) for hdu in hdus)
    if not direct:
        hdus = [hdu.to_astropy() if isinstance(hdu, fitsfile.Unit) else hdu for hdu in hdus]
    if not hdus or not isinstance(hdus[0], (fits.PrimaryHDU, fitsfile.PrimaryUnit)):
        hdus.insert(0, fitsfile.PrimaryUnit() if direct else fits.PrimaryHDU())
    keywords = dict(keywords)
    keywords.setdefault("DATE", utc_now_iso())
    keywords["FILENAME"] = fs.basename(url)
    for hdu in hdus:
        finish_header(hdu.header, keywords, is_image=_is_image(hdu))
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)) and hdu.data is not None \
                and not hdu.data.flags.c_contiguous:
            # astropy writes a view (a flipped sky image) element by element to a file object
            hdu.data = np.ascontiguousarray(hdu.data)
    # fs.atomic_write keeps the cause of a failed write (a full disk) that astropy hides
    try:
        with fs.atomic_write(url) as stream:
            if direct:
                fitsfile.write_units(stream, hdus, _keyword_value(keywords["DATE"]))
            else:
                fits.HDUList(hdus).writeto(stream, checksum=True, output_verify="exception")
    except fs.WriteError as error:  # the failure is the observation's (a campaign's: MOSAIC)
        error.obs_id = _keyword_value(keywords.get("OBS_ID"))
        raise
    return url


def _is_image(hdu) -> bool:
    return isinstance(hdu, fitsfile.ImageUnit) or (
        isinstance(hdu, fits.ImageHDU) and hdu.data is not None)


def _keyword_value(value):
    return value[0] if isinstance(value, tuple) else value


# ============================================================================================
# Checksums of files written without astropy (FITS 4.0 appendix J; Seaman et al. 2012)
# ============================================================================================
def header_with_checksum(header: fits.Header, datasum: int) -> bytes:
    """The header's bytes with DATASUM = `datasum` and the CHECKSUM that makes the HDU sum 0."""
    header["DATASUM"] = (str(datasum), KEYWORD_COMMENTS["DATASUM"])
    header["CHECKSUM"] = ("0" * 16, KEYWORD_COMMENTS["CHECKSUM"])
    total = FitsChecksum()
    total.update(header.tostring().encode("ascii"))
    total.update(datasum.to_bytes(4, "big"))
    header["CHECKSUM"] = encode_checksum(total.value)
    return header.tostring().encode("ascii")
