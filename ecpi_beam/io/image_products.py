"""HDU builders for the BUBE and IMAG products (ICD section 4), one registry entry per product.

Each product file holds, for every (band, occ) it was made for, a group of HDUs whose EXTNAME
ends in `_<band>_<occ>` (e.g. `SNR_13-60_PEO`) and whose header carries BAND, PI_MIN, PI_MAX,
E_MIN, E_MAX and OCC_TYPE, so ds9 (`file.fits[SNR_13-60_PEO]`) and astropy can pick one. In an
observation of several stable pointings, each pointing has its own groups: the first's named as
above, the others' ending in `_P<k>` (`SNR_13-60_PEO_P1`), each header with PNT_ID and the
pointing's RA_PNT, DEC_PNT, PA_PNT, TSTART, TSTOP (io.products.pointing_hdu_keywords).
"""
from __future__ import annotations

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.io.fitsfile import ImageUnit, TableUnit
from ecpi_beam.io.gti import gti_hdu
from ecpi_beam.io.products import (band_keywords, pointing_hdu_keywords, pointing_index,
                                    pointing_suffix)
from ecpi_beam.kernels import error_model
from ecpi_beam.kernels.catalogue import detection_label


def parse_band(band: str):
    lo, hi = band.split("-")
    return int(lo), int(hi)


def _image_hdu(data, extname, keywords, comment=None, bunit=None):
    hdu = ImageUnit(data, name=extname)
    for key, value in keywords.items():
        hdu.header[key] = value
    if bunit:
        hdu.header["BUNIT"] = bunit
    if comment:
        hdu.header["COMMENT"] = comment
    return hdu


def _group_keywords(band, occ, value):
    """The keywords of the HDUs of one image: its band, type, exposure and pointing."""
    keywords = dict(band_keywords(parse_band(band), occ))
    keywords["EXPOSURE"] = (float(value.exposure), "[s] good time in the occultation class")
    keywords.update(pointing_hdu_keywords(value))
    return keywords


def _suffix(band, occ, value) -> str:
    """`<band>_<occ>`, then `_P<k>` for the pointings after the first: the end of an EXTNAME."""
    return f"{band}_{occ}{pointing_suffix(value)}"


def detector_image_hdus(entries, timeline=None):
    """ECL-DET-IMA: counts per (band, occ) and the pixel mask (1 good, 0 dead or noisy)."""
    hdus = []
    for band, occ, products in entries:
        keywords = _group_keywords(band, occ, products)
        hdus.append(_image_hdu(products.counts.astype(np.int32),
                               f"COUNTS_{_suffix(band, occ, products)}", keywords, bunit="count"))
    good = entries[0][2].good_pixels.astype(np.uint8)
    hdus.append(_image_hdu(good, "PIXEL_MASK", {}, "1 = good pixel, 0 = dead or noisy"))
    return hdus


def _finite_card(keywords, key, value, comment):
    """FITS headers hold no NaN: an unmeasurable number leaves its keyword out."""
    if value is not None and np.isfinite(value):
        keywords[key] = (float(value), comment)


def background_fit_keywords(correction) -> dict:
    """Each model term (BKGPARn) with its fitted value, 1-sigma error and physics prediction
    (BKGVALn, BKGERRn, BKGPRDn), and the fit statistic (C-stat, Pearson chi2, dof)."""
    keywords = {}
    for index, (name, (value, error)) in enumerate(sorted(correction.coefficients.items()), 1):
        keywords[f"BKGPAR{index}"] = (name, "background model term")
        _finite_card(keywords, f"BKGVAL{index}", value, f"fitted coefficient of {name}")
        _finite_card(keywords, f"BKGERR{index}", error, f"1-sigma error of {name}")
        _finite_card(keywords, f"BKGPRD{index}", correction.predictions.get(name),
                     f"predicted value of {name} (Moretti/Ajello)")
    statistic = correction.statistic
    _finite_card(keywords, "CSTAT", statistic.get("cstat"), "Cash C-statistic of the fit")
    _finite_card(keywords, "CHI2", statistic.get("chi2"), "Pearson chi2 of the fit")
    if "dof" in statistic:
        keywords["DOF"] = (int(statistic["dof"]), "degrees of freedom of the fit")
    for key, card in correction.extras.items():
        keywords[key] = card
    return keywords


def corrected_image_hdus(entries, timeline=None):
    """ECL-DET-UBC: background-corrected counts, their variance and the fitted model."""
    hdus = []
    for band, occ, products in entries:
        correction = products.correction
        keywords = _group_keywords(band, occ, products)
        keywords["BKGMODE"] = (products.mode, "[bube] bkg_cor_mod")
        keywords.update(background_fit_keywords(correction))
        suffix = _suffix(band, occ, products)
        hdus += [
            _image_hdu(correction.corrected.astype(np.float32), f"UBC_{suffix}", keywords,
                       bunit="count"),
            _image_hdu(correction.variance.astype(np.float32), f"VARIANCE_{suffix}", keywords,
                       "Poisson variance of the counts", bunit="count2"),
            _image_hdu(correction.model.astype(np.float32), f"BACKGROUND_{suffix}", keywords,
                       bunit="count"),
        ]
    return hdus


def occultation_map_hdus(entries, timeline=None):
    """ECL-EAR-OFM: per detector pixel, the mean over the key's good time of the fraction of
    the sky it sees through the open mask (projected solid angle) that the Earth hides."""
    hdus = []
    for band, occ, products in entries:
        keywords = _group_keywords(band, occ, products)
        keywords["AVGTIME"] = (float(products.earth.averaging_time),
                               "[s] good time the map is averaged over")
        hdus.append(_image_hdu(products.earth.occultation_map.astype(np.float32),
                               f"OFM_{_suffix(band, occ, products)}", keywords,
                               "fraction of the sky seen through the mask hidden by the Earth"))
    return hdus


def _irf_keywords(sky) -> dict:
    """IRFCORR names the [imag] irf_corr applied; IRFSPEC its spectral assumption ('irf')."""
    keywords = {}
    if getattr(sky, "irf_corr", ""):
        keywords["IRFCORR"] = (sky.irf_corr, "off-axis correction of intensity and fluxes")
    if getattr(sky, "irf_spectrum", ""):
        keywords["IRFSPEC"] = (sky.irf_spectrum[:50], "irf spectral model")
    return keywords


def sky_image_hdus(entries, timeline=None):
    """ECL-SKY-IMA: intensity, variance, SNR, partial coding, cleaned SNR and exposure maps,
    each with the TAN WCS of its pointing's attitude."""
    hdus = []
    for band, occ, sky in entries:
        keywords = {**_group_keywords(band, occ, sky), **sky.wcs_keywords,
                    **_irf_keywords(sky)}
        images = sky.images
        maps = (("INTENSITY", images.intensity, "count", "counts per fully open detector pixel"),
                ("VARIANCE", images.variance, "count2", "variance of INTENSITY"),
                ("SNR", images.snr, "", "INTENSITY / sqrt(VARIANCE)"),
                ("PCODE", images.pcode, "", "partial coding fraction"),
                ("RESIDUAL_SNR", sky.residual_snr, "", "SNR after removing every found source"),
                ("EXPOSURE", images.pcode * sky.exposure, "s", "exposure x partial coding"))
        for name, data, unit, comment in maps:
            finite = np.where(np.isfinite(data), data, 0.0).astype(np.float32)
            finite = instrument.sky_image_to_fits(finite)  # east to the left
            hdus.append(_image_hdu(finite, f"{name}_{_suffix(band, occ, sky)}", keywords, comment,
                                   unit or None))
    return hdus


SOURCE_COLUMNS = (
    ("RA", "D", "deg"), ("DEC", "D", "deg"), ("ERR_RAD", "E", "arcmin"), ("SNR", "E", None),
    ("FLUX", "E", "count/(s cm2)"), ("FLUX_ERR", "E", "count/(s cm2)"), ("BAND", "12A", None),
    ("PI_MIN", "J", "chan"), ("PI_MAX", "J", "chan"), ("E_MIN", "E", "keV"), ("E_MAX", "E", "keV"),
    ("OCC_TYPE", "3A", None), ("SKY_X", "D", "pixel"), ("SKY_Y", "D", "pixel"), ("PCODE", "E", None),
    ("NAME", "24A", None), ("KNOWN_NAME", "24A", None), ("NEW", "L", None),
)
CATALOG_COLUMNS = (
    ("NAME", "24A", None), ("RA", "D", "deg"), ("DEC", "D", "deg"), ("ERR_RAD", "E", "arcmin"),
    ("SNR", "E", None), ("BEST_BAND", "12A", None), ("KNOWN_NAME", "24A", None),
    ("KNOWN_SEP", "E", "arcmin"), ("NEW", "L", None), ("N_DET", "J", None),
)
BAND_COLUMNS = (("FLUX", "E", "count/(s cm2)"), ("FLUX_ERR", "E", "count/(s cm2)"),
                ("SNR", "E", None))
POINTING_COLUMN = (("PNT_ID", "J", None),)  # SOURCES of an observation of several pointings


def _table_hdu(name, columns, rows) -> TableUnit:
    """A binary table from (name, format, unit) columns and row tuples (possibly none)."""
    return TableUnit(name, [(column, fmt, unit, [row[index] for row in rows])
                            for index, (column, fmt, unit) in enumerate(columns)], len(rows))


def _catalogue_of(entries):
    return next((sky.catalogue for _, _, sky in entries
                 if getattr(sky, "catalogue", None) is not None), None)


def _source_identity(catalogue, band, occ, index, pointing=0):
    """(NAME, KNOWN_NAME, NEW) of a per-image detection: its catalogue source's ('' without
    a catalogue, as for images analysed alone)."""
    label = None if catalogue is None else catalogue.labels.get(
        detection_label(band, occ, index, pointing))
    if label is None:
        return "", "", False
    source = catalogue.sources[label]
    return source.name, source.known_name, source.new


def _several_pointings(entries) -> bool:
    return any(getattr(value, "pointing", None) is not None for _, _, value in entries)


def source_table_hdus(entries, timeline=None):
    """ECL-SOP-IMA: SOURCES, one row per detected source per (band, occ) (SKY_X/Y are 1-based
    FITS pixels of the ECL-SKY-IMA images, instrument.sky_pixel_to_fits), and CATALOG, one row
    per source of the observation (docs/products.md). An observation of several stable
    pointings has one more column, PNT_ID: the pointing whose images SKY_X/Y refer to."""
    catalogue = _catalogue_of(entries)
    several = _several_pointings(entries)
    rows = []
    for band, occ, sky in entries:
        lo, hi = parse_band(band)
        band_kw = band_keywords((lo, hi), occ)
        pointing = pointing_index(sky)
        for index, src in enumerate(sky.sources):
            sky_x, sky_y = instrument.sky_pixel_to_fits(src.row, src.col)
            rows.append((src.ra, src.dec, src.err_rad_arcmin, src.snr, src.flux, src.flux_err,
                         band, lo, hi, _value(band_kw["E_MIN"]), _value(band_kw["E_MAX"]), occ,
                         float(sky_x), float(sky_y), src.pcode,
                         *_source_identity(catalogue, band, occ, index, pointing),
                         *((pointing,) if several else ())))
    table = _table_hdu("SOURCES", SOURCE_COLUMNS + (POINTING_COLUMN if several else ()), rows)
    # ERR_RAD and FLUX_ERR in both tables carry the error model's systematic terms
    keywords = {**(_irf_keywords(entries[0][2]) if entries else {}),
                **error_model.ERROR_MODEL.keywords()}
    for key, value in keywords.items():
        table.header[key] = value
    table.header["CLNLIMIT"] = (any(getattr(sky, "cleaning_limit_reached", False)
                                    for _, _, sky in entries),
                                "cleaning hit its safety limit in an image")
    return [table, catalog_hdu(catalogue, [band for band, _, _ in entries], keywords,
                               several_pointings=several)]


def _band_column_suffix(band: str) -> str:
    return band.replace("-", "_")


def catalog_hdu(catalogue, bands=(), keywords=None,
                several_pointings: bool = False) -> TableUnit:
    """CATALOG: the observation's sources with per-band FLUX_<lo>_<hi>, FLUX_ERR_..., SNR_...
    (NaN where the source was not detected in that band); for an observation of several
    stable pointings, BEST_PNT: the pointing of the highest-SNR detection."""
    bands = tuple(catalogue.bands) if catalogue is not None else tuple(dict.fromkeys(bands))
    columns = list(CATALOG_COLUMNS) + [(f"{name}_{_band_column_suffix(band)}", fmt, unit)
                                       for band in bands for name, fmt, unit in BAND_COLUMNS]
    if several_pointings:
        columns.append(("BEST_PNT", "J", None))
    rows = []
    for source in (catalogue.sources if catalogue is not None else ()):
        per_band = []
        for band in bands:
            measured = source.bands.get(band)
            per_band += ([measured.flux, measured.flux_err, measured.snr] if measured
                         else [np.nan] * 3)
        rows.append((source.name, source.ra, source.dec, source.err_rad_arcmin, source.snr,
                     source.best_band, source.known_name, source.known_sep_arcmin, source.new,
                     source.n_detections, *per_band,
                     *((source.best_pointing,) if several_pointings else ())))
    table = _table_hdu("CATALOG", columns, rows)
    header = table.header
    if catalogue is not None:
        header["NEWSNR"] = (catalogue.new_snr_min, "NEW: no known source matched, SNR >= this")
        header["MATCHRAD"] = (round(catalogue.match_radius_factor, 4),
                              "known-source matching radius / ERR_RAD")
        header["MATCHMIN"] = (round(catalogue.match_radius_min_arcmin, 3),
                              "[arcmin] smallest known-source matching radius")
    header["KNOWNCAT"] = ("ECL-SRC-CAT", "CALDB catalogue of the known sources")
    header["POSCHOIC"] = ("highest SNR", "position: that of the highest-SNR detection")
    for key, value in (keywords or {}).items():
        header[key] = value
    return table


def _value(keyword):
    return keyword[0] if isinstance(keyword, tuple) else keyword


def occultation_gti_hdus(timeline, occ_types):
    """ECL-GTI-UBC: the good time of each occultation type, one OGIP GTI extension each, per
    stable pointing (`GTI_<occ>`, then `GTI_<occ>_P<k>` for the pointings after the first)."""
    views = [timeline.for_pointing(k) for k in range(getattr(timeline, "n_pointings", 1))]
    return [gti_hdu(view.class_gti[occ], f"GTI_{occ}{pointing_suffix(view)}",
                    {"OCC_TYPE": occ, **pointing_hdu_keywords(view)})
            for view in views for occ in occ_types]


PRODUCT_BUILDERS = {
    "ECL-DET-IMA": detector_image_hdus,
    "ECL-DET-UBC": corrected_image_hdus,
    "ECL-EAR-OFM": occultation_map_hdus,
    "ECL-SKY-IMA": sky_image_hdus,
    "ECL-SOP-IMA": source_table_hdus,
}
