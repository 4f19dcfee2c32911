"""HDU builders of the MOSA products (ICD section 4): ECL-MOS-IMA and ECL-MOS-SOP.

ECL-MOS-IMA holds, per (band, occ):
- `HEALPIX_<band>_<occ>`: an OGIP-style HEALPix binary table (the keywords healpy and
  astropy-healpix users expect: PIXTYPE, ORDERING = 'NESTED', COORDSYS = 'C', NSIDE, FIRSTPIX,
  LASTPIX) in the explicit (partial-sky) index scheme: one row per covered pixel, PIXEL first,
  so `healpy.read_map(file, hdu=..., field=..., partial=True)` reads it;
- with the CAR grid, `INTENSITY_<band>_<occ>` ... `NCONTRIB_<band>_<occ>` images of the
  covered cut-out of an all-sky plate carree, with a CAR WCS that ds9 opens.
An `OBSERVATIONS` table lists the observations that went into the mosaic.
"""
from __future__ import annotations

import numpy as np
from astropy.io import fits

from ecpi_beam.io.image_products import parse_band, source_table_hdus
from ecpi_beam.io.products import band_keywords

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
    columns = [fits.Column(name="OBS_ID", format="32A", array=[r[0] for r in rows]),
               fits.Column(name="TSTART", format="D", unit="s", array=[r[1] for r in rows]),
               fits.Column(name="TSTOP", format="D", unit="s", array=[r[2] for r in rows])]
    hdu = fits.BinTableHDU.from_columns(columns, name="OBSERVATIONS")
    hdu.header["NOBS"] = (len(rows), "observations in the mosaic")
    return hdu


def mosaic_image_hdus(mosaics, observations) -> list:
    """ECL-MOS-IMA: `mosaics` is [(band, occ, grid, MosaicMap), ...]."""
    hdus = []
    for band, occ, grid, mosaic_map in sorted(mosaics, key=lambda m: (
            m[1], parse_band(m[0]), m[2].kind != "healpix")):  # HEALPix first: healpy's hdu=1
        build = healpix_map_hdu if grid.kind == "healpix" else car_map_hdus
        built = build(grid, mosaic_map, band, occ)
        hdus += built if isinstance(built, list) else [built]
    return hdus + [observations_hdu(observations)]


class _Sources:
    def __init__(self, sources):
        self.sources = tuple(sources)


def mosaic_source_hdus(found, observations) -> list:
    """ECL-MOS-SOP: the columns of ECL-SOP-IMA; `found` is [((band, occ), [SourceRow]), ...].
    SKY_X and SKY_Y are NaN: a mosaic source has no sky-image pixel (use RA and DEC)."""
    entries = sorted(((band, occ, _Sources(rows)) for (band, occ), rows in found),
                     key=lambda e: (e[1], parse_band(e[0])))
    return source_table_hdus(entries) + [observations_hdu(observations)]
