"""HDU builders (and the reader of the stored accumulators) of the MOSA products (ICD section 4,
docs/products.md): ECL-MOS-IMA, ECL-MOS-SOP, ECL-MOS-LCS, and per observation ECL-MOS-ACC.

ECL-MOS-IMA holds, per (band, occ):
- `HEALPIX_<band>_<occ>`: an OGIP-style HEALPix binary table (the keywords healpy and
  astropy-healpix users expect: PIXTYPE, ORDERING = 'NESTED', COORDSYS = 'C', NSIDE, FIRSTPIX,
  LASTPIX) in the explicit (partial-sky) index scheme: one row per covered pixel, PIXEL first,
  so `healpy.read_map(file, hdu=..., field=..., partial=True)` reads it;
- with the CAR grid, `INTENSITY_<band>_<occ>` ... `NCONTRIB_<band>_<occ>` images of the
  covered cut-out of an all-sky plate carree, with a CAR WCS that ds9 opens.
An `OBSERVATIONS` table lists the observations that went into the mosaic.

ECL-MOS-ACC (one per observation) stores what the observation adds to any mosaic: per (band,
occ) and stable pointing (`_P<k>` after the names of the first), `RESIDUAL_<band>_<occ>` (its
sky image cleaned of the sources IMAG found, in count s-1 cm-2), `VARIANCE_...`, `PCODE_...`
with the TAN WCS and EXPOSURE, and `RESTORED_...`, the
sources to put back (RA, DEC, FLUX). ECL-MOS-LCS holds one OGIP light curve per mosaic source
(`RATE_S<k>_<band>_<occ>`: one row per observation that saw it), then `GTI` and
`OBSERVATIONS`.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from astropy.io import fits

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs
from ecpi_beam.io.gti import ICD_TIME_KEYWORDS, gti_hdu
from ecpi_beam.io.image_products import parse_band, source_table_hdus
from ecpi_beam.io.products import (band_keywords, pointing_hdu_keywords, pointing_index,
                                    pointing_suffix)
from ecpi_beam.kernels.mosaic import RestoredSource, SkyRates
from ecpi_beam.kernels.timeline import Pointing

MAP_COLUMNS = (("INTENSITY", "E", "count/(s cm2)", "inverse-variance weighted rate"),
               ("VARIANCE", "E", "count2/(s2 cm4)", "variance of INTENSITY"),
               ("SIGNIFICANCE", "E", None, "INTENSITY / sqrt(VARIANCE)"),
               ("EXPOSURE", "E", "s", "sum of exposure x partial coding"),
               ("NCONTRIB", "J", None, "number of sky images combined"))


def _group_keywords(band: str, occ: str, grid) -> dict:
    keywords = dict(band_keywords(parse_band(band), occ))
    keywords["MOSGRID"] = (grid.kind.upper(), "mosaic grid: HEALPIX or CAR")
    return keywords


def healpix_map_hdu(grid, mosaic_map, band: str, occ: str) -> fits.BinTableHDU:
    columns = [fits.Column(name="PIXEL", format="K", array=mosaic_map.pixels)]
    for name, fmt, unit, _ in MAP_COLUMNS:
        columns.append(fits.Column(name=name, format=fmt, unit=unit,
                                   array=np.asarray(getattr(mosaic_map, name.lower()))))
    hdu = fits.BinTableHDU.from_columns(columns, name=f"HEALPIX_{band}_{occ}")
    header = hdu.header
    for key, value in {
            "PIXTYPE": ("HEALPIX", "HEALPix pixelisation (Gorski et al. 2005)"),
            "ORDERING": ("NESTED", "pixel ordering scheme"),
            "COORDSYS": ("C", "celestial (ICRS) coordinates"),
            "NSIDE": (int(grid.nside), "resolution parameter"),
            "FIRSTPIX": (0, "first pixel number of the full sphere"),
            "LASTPIX": (12 * int(grid.nside) ** 2 - 1, "last pixel number of the full sphere"),
            "INDXSCHM": ("EXPLICIT", "the PIXEL column gives each row's pixel"),
            "OBJECT": ("PARTIAL", "only the covered pixels are listed"),
            **_group_keywords(band, occ, grid)}.items():
        header[key] = value
    for index, (name, _, _, comment) in enumerate(MAP_COLUMNS, start=2):
        header.comments[f"TTYPE{index}"] = comment
    return hdu


def car_map_hdus(grid, mosaic_map, band: str, occ: str) -> list:
    """The covered cut-out of the all-sky CAR grid: one image per map column, NaN (0 for
    EXPOSURE and NCONTRIB) where no image contributes."""
    iy, ix = np.divmod(mosaic_map.pixels, grid.n_ra)
    if len(ix):
        iy0, ix0 = int(iy.min()), int(ix.min())
        shape = (int(iy.max()) - iy0 + 1, int(ix.max()) - ix0 + 1)
    else:
        iy0 = ix0 = 0
        shape = (1, 1)
    keywords = {**_group_keywords(band, occ, grid), **grid.wcs_keywords(ix0, iy0)}
    hdus = []
    for name, _, unit, comment in MAP_COLUMNS:
        counts = name in ("EXPOSURE", "NCONTRIB")
        image = np.full(shape, 0 if counts else np.nan,
                        dtype=np.int32 if name == "NCONTRIB" else np.float32)
        image[iy - iy0, ix - ix0] = getattr(mosaic_map, name.lower())
        hdu = fits.ImageHDU(image, name=f"{name}_{band}_{occ}")
        for key, value in keywords.items():
            hdu.header[key] = value
        if unit:
            hdu.header["BUNIT"] = unit
        hdu.header["COMMENT"] = comment
        hdus.append(hdu)
    return hdus


def observations_hdu(observations) -> fits.BinTableHDU:
    """[(obs_id, tstart, tstop), ...] of the observations combined."""
    rows = sorted(observations)
    columns = [fits.Column(name="OBS_ID", format="40A", array=[r[0] for r in rows]),
               fits.Column(name="TSTART", format="D", unit="s", array=[r[1] for r in rows]),
               fits.Column(name="TSTOP", format="D", unit="s", array=[r[2] for r in rows])]
    hdu = fits.BinTableHDU.from_columns(columns, name="OBSERVATIONS")
    hdu.header["NOBS"] = (len(rows), "observations in the mosaic")
    return hdu


def read_observation_ids(url: str) -> list[str]:
    """The OBS_IDs of a MOSA product's OBSERVATIONS table."""
    with fits.open(io.BytesIO(fs.read_bytes(url))) as hdul:
        return sorted(str(value).strip() for value in hdul["OBSERVATIONS"].data["OBS_ID"])


def mosaic_image_hdus(mosaics, observations, totals=None) -> list:
    """ECL-MOS-IMA: `mosaics` is [(band, occ, grid, MosaicMap), ...]; `totals` {(band, occ):
    (images, exposure)} gives each map's NOBS and EXPOSURE (the summed good time)."""
    hdus = []
    for band, occ, grid, mosaic_map in sorted(mosaics, key=lambda m: (
            m[1], parse_band(m[0]), m[2].kind != "healpix")):  # HEALPix first: healpy's hdu=1
        build = healpix_map_hdu if grid.kind == "healpix" else car_map_hdus
        built = build(grid, mosaic_map, band, occ)
        images, exposure = (totals or {}).get((band, occ), (None, None))
        for hdu in built if isinstance(built, list) else [built]:
            if images is not None:
                hdu.header["NOBS"] = (int(images), "sky images combined in this map")
                hdu.header["EXPOSURE"] = (float(exposure), "[s] their summed good time")
            hdus.append(hdu)
    return hdus + [observations_hdu(observations)]


class MosaicSources:
    """The sources of one (band, occ) of the mosaic, with the mosaic's catalogue (the shape
    source_table_hdus takes)."""

    def __init__(self, sources, catalogue=None):
        self.sources, self.catalogue = tuple(sources), catalogue


def mosaic_source_hdus(found, observations, catalogue=None) -> list:
    """ECL-MOS-SOP: SOURCES with the columns of ECL-SOP-IMA (NAME, KNOWN_NAME and NEW from
    the mosaic's catalogue), CATALOG, and OBSERVATIONS; `found` is [((band, occ), [SourceRow]),
    ...]. SKY_X and SKY_Y are NaN: a mosaic source has no sky-image pixel (use RA and DEC)."""
    entries = sorted(((band, occ, MosaicSources(rows, catalogue)) for (band, occ), rows in found),
                     key=lambda e: (e[1], parse_band(e[0])))
    hdus = source_table_hdus(entries)
    hdus[0].header["POSFIT"] = ("PSF on local tangent-plane grids",
                                "positions: docs/mosa.md")
    return hdus + [observations_hdu(observations)]


# ============================================================================================
# ECL-MOS-ACC: one observation's contribution to any mosaic
# ============================================================================================
_ACC_IMAGES = (("RESIDUAL", "residual", "count/(s cm2)", "sky image cleaned of its sources"),
               ("VARIANCE", "variance", "count2/(s2 cm4)", "variance of RESIDUAL"),
               ("PCODE", "pcode", None, "partial coding fraction"))
_WCS_KEYS = ("WCSAXES", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2", "CRVAL1",
             "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "RADESYS", "EQUINOX", "LONPOLE")


def mosaic_input_hdus(entries) -> list:
    """ECL-MOS-ACC of one observation: `entries` [(band, occ, SkyRates), ...], one per image
    of each stable pointing (`_P<k>` after the first's names, io.products.pointing_suffix)."""
    hdus = []
    for band, occ, rates in sorted(entries, key=lambda e: (pointing_index(e[2]), e[1],
                                                           parse_band(e[0]))):
        keywords = {**band_keywords(parse_band(band), occ), **rates.wcs_keywords,
                    "EXPOSURE": (float(rates.exposure), "[s] good time of the occultation type"),
                    **pointing_hdu_keywords(rates)}
        suffix = f"{band}_{occ}{pointing_suffix(rates)}"
        for name, attribute, unit, comment in _ACC_IMAGES:
            data = np.asarray(getattr(rates, attribute), dtype=float)
            data = np.where(np.isfinite(data), data, np.nan).astype(np.float32)
            hdu = fits.ImageHDU(data, name=f"{name}_{suffix}")
            for key, value in keywords.items():
                hdu.header[key] = value
            hdu.header["HDUCLAS2"] = ("NET" if name == "RESIDUAL" else
                                      "VARIANCE" if name == "VARIANCE" else "EFFICIENCY")
            if unit:
                hdu.header["BUNIT"] = unit
            hdu.header["COMMENT"] = comment
            hdus.append(hdu)
        table = fits.BinTableHDU.from_columns(
            [fits.Column(name="RA", format="D", unit="deg", array=[s.ra for s in rates.sources]),
             fits.Column(name="DEC", format="D", unit="deg",
                         array=[s.dec for s in rates.sources]),
             fits.Column(name="FLUX", format="D", unit="count/(s cm2)",
                         array=[s.flux for s in rates.sources])],
            name=f"RESTORED_{suffix}", nrows=len(rates.sources))
        for key, value in {**band_keywords(parse_band(band), occ),
                           **pointing_hdu_keywords(rates)}.items():
            table.header[key] = value
        table.header["COMMENT"] = "sources IMAG found, restored with the beam (docs/mosa.md)"
        hdus.append(table)
    return hdus


def _stored_pointing(header):
    """The Pointing of an ECL-MOS-ACC image of an observation of several stable pointings
    (its PNT_ID, RA_PNT, DEC_PNT, PA_PNT, TSTART, TSTOP), None for one of a single pointing."""
    if "PNT_ID" not in header:
        return None
    quaternion = instrument.quaternion_from_pointing(
        float(header["RA_PNT"]), float(header["DEC_PNT"]), -float(header["PA_PNT"]))
    return Pointing(int(header["PNT_ID"]), quaternion, float(header["TSTART"]),
                    float(header["TSTOP"]))


def read_mosaic_inputs(url: str):
    """(primary header keywords, [(band, occ, SkyRates), ...]) of an ECL-MOS-ACC file, its
    checksums verified: a damaged file is one EcpiError naming it."""
    try:
        raw = fs.read_bytes(url)
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            warnings.filterwarnings("error", message=".*[Cc]hecksum.*")
            with fits.open(io.BytesIO(raw), checksum=True) as hdul:
                primary = dict(hdul[0].header)
                entries = []
                for hdu in hdul:
                    if not hdu.name.startswith("RESIDUAL_"):
                        continue
                    suffix = hdu.name[len("RESIDUAL_"):]
                    header = hdu.header
                    band, occ = str(header["BAND"]), str(header["OCC_TYPE"])
                    sources = hdul[f"RESTORED_{suffix}"].data
                    entries.append((band, occ, SkyRates(
                        residual=np.asarray(hdu.data, dtype=float),
                        variance=np.asarray(hdul[f"VARIANCE_{suffix}"].data, dtype=float),
                        pcode=np.asarray(hdul[f"PCODE_{suffix}"].data, dtype=float),
                        exposure=float(header["EXPOSURE"]),
                        wcs_keywords={key: header[key] for key in _WCS_KEYS if key in header},
                        sources=tuple(RestoredSource(float(r["RA"]), float(r["DEC"]),
                                                     float(r["FLUX"])) for r in sources),
                        pointing=_stored_pointing(header))))
    except (OSError, KeyError, ValueError, TypeError, Warning) as err:
        raise EcpiError(f"{url}: not a readable ECL-MOS-ACC product "
                        f"({' '.join(str(err).split()) or type(err).__name__})") from None
    return primary, entries


# ============================================================================================
# ECL-MOS-LCS: long-term light curves
# ============================================================================================
def light_curve_hdu(index: int, name: str, row, band: str, occ: str, points) -> fits.BinTableHDU:
    """One source's light curve in one band and occultation type: a row per observation that
    saw it (OGIP/93-003 with a TIMEDEL column: the bins are the observations)."""
    points = sorted(points, key=lambda p: p.tstart)
    columns = [
        fits.Column(name="TIME", format="D", unit="s",
                    array=[0.5 * (p.tstart + p.tstop) for p in points]),
        fits.Column(name="TIMEDEL", format="D", unit="s",
                    array=[p.tstop - p.tstart for p in points]),
        fits.Column(name="RATE", format="E", unit="count/(s cm2)", array=[p.flux for p in points]),
        fits.Column(name="ERROR", format="E", unit="count/(s cm2)",
                    array=[p.flux_err for p in points]),
        fits.Column(name="EXPOSURE", format="E", unit="s", array=[p.exposure for p in points]),
        fits.Column(name="PCODE", format="E", array=[p.pcode for p in points]),
        fits.Column(name="OBS_ID", format="40A", array=[p.obs_id for p in points])]
    hdu = fits.BinTableHDU.from_columns(columns, name=f"RATE_S{index:03d}_{band}_{occ}",
                                        nrows=len(points))
    header = hdu.header
    cards = {
        "HDUCLASS": ("OGIP", "format conforms to OGIP standard"),
        "HDUCLAS1": ("LIGHTCURVE", "light curve dataset"),
        "HDUCLAS2": ("NET", "background removed by the balancing"),
        "HDUCLAS3": ("RATE", "RATE: flux per unit detector area"),
        "TIMEPIXR": (0.5, "TIME is the middle of the observation"),
        "TIMEREF": ("LOCAL", "times are those at the spacecraft"),
        **ICD_TIME_KEYWORDS,
        **band_keywords(parse_band(band), occ),
        "SRC_ID": (int(index), "source number in ECL-MOS-SOP CATALOG order"),
        "OBJECT": (name, "source name (ECL-MOS-SOP NAME)"),
        "RA_OBJ": (float(row.ra), "[deg] source RA (ICRS)"),
        "DEC_OBJ": (float(row.dec), "[deg] source Dec (ICRS)"),
        "MOSFLUX": (float(row.flux), "[count/(s cm2)] mosaic FLUX: weighted mean"),
    }
    if points:
        # readers that take one bin width (stingray) get the typical observation's
        cards["TIMEDEL"] = (float(np.median([p.tstop - p.tstart for p in points])),
                            "[s] median of the TIMEDEL column")
        cards["TSTART"] = (float(min(p.tstart for p in points)),
                           "[s] start of the first observation")
        cards["TSTOP"] = (float(max(p.tstop for p in points)), "[s] end of the last observation")
    for key, value in cards.items():
        header[key] = value
    header.comments["TTYPE1"] = "middle of the observation"
    header.comments["TTYPE2"] = "length of the observation"
    header.comments["TTYPE4"] = "1-sigma error of RATE"
    header.comments["TTYPE5"] = "good time x partial coding at the source"
    return hdu


def mosaic_light_curve_hdus(curves, observations) -> list:
    """ECL-MOS-LCS: `curves` [(index, name, SourceRow, band, occ, [LightCurvePoint]), ...]
    in catalogue order, then GTI (the observations' spans) and OBSERVATIONS."""
    hdus = [light_curve_hdu(*curve) for curve in curves]
    spans = np.array(sorted((r[1], r[2]) for r in observations), dtype=float).reshape(-1, 2)
    return hdus + [gti_hdu(spans, "GTI"), observations_hdu(observations)]
