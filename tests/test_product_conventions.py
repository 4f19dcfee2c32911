"""FITS and OGIP conventions of every product of one run (the session's reference run).

Checksums on every HDU (a flipped byte is caught by fitsverify), time and pointing keywords,
OGIP classes, a comment on every keyword, sky images with east to the left, bands in order.
"""
import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from ecpi_beam import instrument
from ecpi_beam.io.image_products import parse_band

from conftest import run_fitsverify
from pipeline_fixtures import ALL_PRODUCTS, angular_offset_arcmin, sources_table

TIME_KEYWORDS = ("DATE-OBS", "DATE-END", "MJD-OBS", "DATEREF", "TIMEZERO", "TIMESYS")
POINTING_KEYWORDS = ("RA_PNT", "DEC_PNT", "PA_PNT")
STRUCTURAL = ("SIMPLE", "XTENSION", "BITPIX", "EXTEND", "PCOUNT", "GCOUNT", "TFIELDS", "END")


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_every_hdu_has_checksums_and_a_flipped_byte_fails_fitsverify(
        product, reference_run, small_observation, tmp_path, fitsverify):
    path = reference_run.product(product, small_observation.obs_id)
    fitsverify(path)
    with fits.open(path, checksum=True) as hdul:  # astropy checks them too (warns if wrong)
        for hdu in hdul:
            assert "CHECKSUM" in hdu.header and "DATASUM" in hdu.header, f"{product} {hdu.name}"
    damaged = tmp_path / path.name
    shutil.copy(path, damaged)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x10
    damaged.write_bytes(bytes(data))
    report = run_fitsverify(damaged)
    assert "verification OK" not in report, report


def test_time_pointing_and_class_keywords_with_comments(reference_run, small_observation):
    truth = small_observation.truth
    problems = []
    for product in ALL_PRODUCTS:
        with fits.open(reference_run.product(product, small_observation.obs_id)) as hdul:
            for hdu in hdul:
                where, header = f"{product}[{hdu.name}]", hdu.header
                problems += [f"{where}: no {key}" for key in TIME_KEYWORDS + POINTING_KEYWORDS
                             if key not in header]
                problems += [f"{where}: {card.keyword} has no comment" for card in header.cards
                             if card.keyword not in STRUCTURAL + ("COMMENT", "HISTORY", "")
                             and not card.comment]
                if isinstance(hdu, fits.ImageHDU) and hdu.data is not None:
                    if header.get("HDUCLASS") != "OGIP" or header.get("HDUCLAS1") != "IMAGE" \
                            or not header.get("HDUCLAS2"):
                        problems.append(f"{where}: no OGIP image class")
                if "HDUCLASS" in header and "HDUVERS" not in header:
                    problems.append(f"{where}: HDUCLASS without HDUVERS")
                if hdu.name.startswith("GTI") and header.get("HDUCLAS1") != "GTI":
                    problems.append(f"{where}: a GTI without HDUCLAS1 = 'GTI'")
                if hdu.name == "SOURCES" and (header.get("RADESYS"), header.get("EQUINOX")) \
                        != ("ICRS", 2000.0):
                    problems.append(f"{where}: no RADESYS/EQUINOX")
    assert problems == []

    header = fits.getheader(reference_run.product("ECL-SKY-IMA", small_observation.obs_id), 1)
    mjdref = header["MJDREFI"] + header["MJDREFF"]
    start = Time(mjdref + header["TSTART"] / 86400.0, format="mjd", scale="tt")
    assert Time(header["DATE-OBS"], scale="tt").mjd == pytest.approx(start.mjd, abs=1e-8)
    assert header["MJD-OBS"] == pytest.approx(start.mjd, abs=1e-8)
    assert Time(header["DATEREF"], scale="tt").mjd == pytest.approx(mjdref, abs=1e-8)
    assert header["DATE-OBS"] < header["DATE-END"]
    # the pointing keywords are those of the image's reference attitude
    pointing = truth["pointing"]
    assert float(angular_offset_arcmin(header["RA_PNT"], header["DEC_PNT"], header["CRVAL1"],
                                       header["CRVAL2"])) < 0.1
    assert float(angular_offset_arcmin(header["RA_PNT"], header["DEC_PNT"], pointing["ra"],
                                       pointing["dec"])) < 1.0
    roll = pointing.get("roll", 0.0)
    assert (header["PA_PNT"] + roll + 180.0) % 360.0 - 180.0 == pytest.approx(0.0, abs=0.1)


def test_wcs_needs_no_fixing(reference_run, small_observation):
    """With DATEREF and MJD-END written, astropy's WCS has nothing to fix ('datfix')."""
    path = reference_run.product("ECL-SKY-IMA", small_observation.obs_id)
    with fits.open(path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("error")
        WCS(hdul[1].header)


def test_sky_images_show_east_left_and_the_source_where_it_is(reference_run, small_observation):
    path = reference_run.product("ECL-SKY-IMA", small_observation.obs_id)
    source = small_observation.source
    with fits.open(path) as hdul:
        hdu = hdul["SNR_13-60_PEO"]
        wcs, snr = WCS(hdu.header), np.array(hdu.data)
        header = hdu.header
    cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
    assert np.linalg.det(cd) < 0  # east to the left, as on the sky
    x0, y0 = header["CRPIX1"] - 1, header["CRPIX2"] - 1
    ra0, dec0 = wcs.pixel_to_world_values(x0, y0)
    ra_right, _ = wcs.pixel_to_world_values(x0 + 1, y0)
    if abs(small_observation.truth["pointing"].get("roll", 0.0)) < 45:
        assert ra_right < ra0  # ds9: RA increases to the left
    x, y = wcs.world_to_pixel_values(source["ra"], source["dec"])
    peak_y, peak_x = np.unravel_index(np.argmax(snr), snr.shape)
    assert np.hypot(peak_x - x, peak_y - y) < 1.5
    rows = [row for row in sources_table(reference_run.product("ECL-SOP-IMA",
                                                               small_observation.obs_id))
            if row["BAND"] == "13-60"]
    assert rows
    best = min(rows, key=lambda row: np.hypot(row["SKY_X"] - 1 - x, row["SKY_Y"] - 1 - y))
    assert np.hypot(best["SKY_X"] - 1 - x, best["SKY_Y"] - 1 - y) < 1.0
    ra, dec = wcs.pixel_to_world_values(best["SKY_X"] - 1, best["SKY_Y"] - 1)
    assert float(angular_offset_arcmin(ra, dec, best["RA"], best["DEC"])) < 0.01


def test_image_extensions_are_in_band_order(reference_run, small_observation):
    for product in ("ECL-DET-IMA", "ECL-SKY-IMA"):
        with fits.open(reference_run.product(product, small_observation.obs_id)) as hdul:
            bands = [parse_band(hdu.header["BAND"]) for hdu in hdul
                     if hdu.name.startswith(("COUNTS_", "SNR_"))]
        assert len(bands) == len(instrument.DEFAULT_BANDS)
        assert bands == sorted(bands), (product, bands)
