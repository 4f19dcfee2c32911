"""BUBE and IMAG product files, including the edge of an occultation class with no good time."""
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.io import image_products
from ecpi_beam.io.products import standard_keywords, write_product
from ecpi_beam.kernels import background
from ecpi_beam.kernels.sky_analysis import SkyAnalyser, source_rows
from ecpi_beam.params import ImagParams
from ecpi_beam.transforms.bube import DetectorProducts
from ecpi_beam.transforms.imag import SkyProducts

OBSERVATION = {"OBS_ID": "0000000042", "TSTART": 3.0e8, "TSTOP": 3.0e8 + 600, "MJDREFI": 57754,
               "MJDREFF": 0.000800740741, "TIMESYS": "TT", "TIMEUNIT": "s"}
QUATERNION = instrument.quaternion_from_pointing(83.63, 22.01, 12.0)


@pytest.fixture(scope="module")
def results():
    """A bright source in 13-60 PEO and an empty NEO class (no good time, no counts)."""
    caldb = Caldb.open(default_caldb_dir())
    pixcal = caldb.pixel_calibration()
    good, efficiency = pixcal.good, pixcal.imaging_efficiency
    template = background.sky_illumination_template(caldb.mask_pattern(), efficiency)
    analyser = SkyAnalyser(caldb.mask_pattern(), pixcal, ImagParams())
    shadow = instrument.pixel_open_fraction(caldb.mask_pattern(),
                                            instrument.sky_pixel_to_los(90.3, 110.6))
    rng = np.random.default_rng(9)
    detector, sky = [], []
    for occ, exposure, expected in (("PEO", 500.0, (60.0 + 30.0 * shadow) * efficiency),
                                    ("NEO", 0.0, np.zeros((80, 80)))):
        counts = rng.poisson(expected) * good
        correction = background.correct_background("shape", counts, good, template,
                                                   {"efficiency": efficiency})
        products = DetectorProducts(counts, exposure, good, efficiency, "shape", correction)
        analysis = analyser.analyse(correction.corrected, correction.variance, good, efficiency,
                                    "shape")
        detector.append(("13-60", occ, products))
        sky.append(("13-60", occ, SkyProducts(
            analysis.images, analysis.residual_snr, exposure,
            instrument.sky_wcs_keywords(QUATERNION),
            source_rows(analysis.detections, QUATERNION, exposure))))
    return detector, sky


@pytest.mark.parametrize("product", ["ECL-DET-IMA", "ECL-DET-UBC", "ECL-SKY-IMA", "ECL-SOP-IMA"])
def test_products_pass_fitsverify_even_for_an_empty_class(results, product, tmp_path,
                                                           fitsverify):
    detector, sky = results
    entries = detector if product.startswith("ECL-DET") else sky
    url = write_product(str(tmp_path / f"{product}.fits"),
                        image_products.PRODUCT_BUILDERS[product](entries),
                        standard_keywords(product, OBSERVATION, "cafe"))
    fitsverify(url)
    with fits.open(url) as hdul:
        for hdu in hdul[1:]:
            assert hdu.header["OBS_ID"] == "0000000042"
            if "OCC_TYPE" in hdu.header:
                assert hdu.name.endswith("_" + hdu.header["OCC_TYPE"])


def test_source_table_rows_and_sky_pixels_agree_with_the_wcs(results, tmp_path):
    _, sky = results
    url = write_product(str(tmp_path / "sop.fits"), image_products.source_table_hdus(sky),
                        standard_keywords("ECL-SOP-IMA", OBSERVATION, "cafe"))
    table = fits.getdata(url, "SOURCES")
    assert len(table) == 1 and table["OCC_TYPE"][0] == "PEO" and table["BAND"][0] == "13-60"
    header = fits.getheader(image_products_file(sky, tmp_path), "SNR_13-60_PEO")
    ra, dec = WCS(header).pixel_to_world_values(table["SKY_X"][0] - 1, table["SKY_Y"][0] - 1)
    assert ra == pytest.approx(table["RA"][0], abs=1e-6)
    assert dec == pytest.approx(table["DEC"][0], abs=1e-6)
    assert table["SKY_Y"][0] - 1 == pytest.approx(90.3, abs=0.2)
    # east to the left: the sky grid's column axis is reversed in the product
    assert table["SKY_X"][0] - 1 == pytest.approx(instrument.N_SKY - 1 - 110.6, abs=0.2)
    snr = fits.getdata(image_products_file(sky, tmp_path), "SNR_13-60_PEO")
    peak_y, peak_x = np.unravel_index(np.argmax(snr), snr.shape)
    assert (peak_x + 1, peak_y + 1) == (round(table["SKY_X"][0]), round(table["SKY_Y"][0]))
    assert table["ERR_RAD"][0] > 0 and table["FLUX"][0] > 5 * table["FLUX_ERR"][0]


def image_products_file(sky, tmp_path):
    return write_product(str(tmp_path / "sky.fits"), image_products.sky_image_hdus(sky),
                         standard_keywords("ECL-SKY-IMA", OBSERVATION, "cafe"))


def test_background_errors_of_an_empty_class_are_left_out_not_nan(results):
    detector, _ = results
    hdus = {hdu.name: hdu.header for hdu in image_products.corrected_image_hdus(detector)}
    empty, full = hdus["UBC_13-60_NEO"], hdus["UBC_13-60_PEO"]
    assert empty["EXPOSURE"] == 0.0 and "BKGERR1" not in empty
    assert full["BKGPAR1"] == empty["BKGPAR1"] and full["BKGERR1"] > 0


def test_irf_cleaning_and_error_model_keywords_fit_their_cards(results, tmp_path, fitsverify):
    import dataclasses
    import warnings

    from ecpi_beam.kernels import imaging

    _, sky = results
    sky = [(band, occ, dataclasses.replace(products, irf_corr="irf",
                                           irf_spectrum=imaging.IRF_SPECTRUM,
                                           cleaning_limit_reached=True))
           for band, occ, products in sky]
    for product in ("ECL-SKY-IMA", "ECL-SOP-IMA"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a truncated card comment would warn
            url = write_product(str(tmp_path / f"{product}.fits"),
                                image_products.PRODUCT_BUILDERS[product](sky),
                                standard_keywords(product, OBSERVATION, "cafe"))
        fitsverify(url)
        header = fits.getheader(url, 1)
        assert header["IRFCORR"] == "irf" and header["IRFSPEC"] == imaging.IRF_SPECTRUM
    assert fits.getheader(url, "SOURCES")["CLNLIMIT"] is True
    # the terms of ERR_RAD and FLUX_ERR, in both tables (kernels/error_model.py)
    from ecpi_beam.kernels.error_model import ERROR_MODEL
    for table in ("SOURCES", "CATALOG"):
        header = fits.getheader(url, table)
        for key, (value, _) in ERROR_MODEL.keywords().items():
            assert header[key] == pytest.approx(value), (table, key)
