"""MOSA kernels: grids, reprojection through the WCS, exact sums, the issue's mosaic checks.

Ten observations at different pointings are simulated at the detector-image level (Poisson
counts of a point source over a flat background, imaged by the IMAG kernels): fast and exact.
"""
from dataclasses import replace

import numpy as np
import pytest
from sky_fixtures import flux_scale, simulated_sky

from ecpi_beam import instrument
from ecpi_beam.kernels import mosaic

SOURCE = (150.0, 20.0)
POINTINGS = [(150.0 + 8.0 * np.cos(a), 20.0 + 8.0 * np.sin(a)) for a in
             np.linspace(0.0, 2.0 * np.pi, 10, endpoint=False)]
CAR_DEG = 0.5


def rates_of(sky):
    """A simulated sky image (counts, product orientation) as MOSA combines it."""
    return mosaic.SkyRates.from_counts(sky.intensity, sky.variance, sky.pcode, sky.exposure,
                                       sky.wcs_keywords)


def combined(grid, skies, pcode_min=0.1):
    tiles = {}
    for sky in skies:
        for tile, sums in mosaic.image_to_grid(grid, rates_of(sky), pcode_min).items():
            tiles[tile] = tiles[tile] + sums if tile in tiles else sums
    return tiles


def sample_at(sky, ra, dec, name):
    """The sky-image value of the pixel containing (ra, dec), through the LOS frame."""
    row, col = instrument.los_to_sky_pixel(instrument.radec_to_los(ra, dec, sky.quaternion))
    x, y = instrument.sky_pixel_to_fits(row, col)  # the arrays are in product orientation
    return getattr(sky, name)[int(np.rint(y)) - 1, int(np.rint(x)) - 1]


@pytest.fixture(scope="module")
def bright_skies():
    rng = np.random.default_rng(13)
    return [simulated_sky(rng, pointing, [(*SOURCE, 0.1)]) for pointing in POINTINGS]


@pytest.fixture(scope="module")
def healpix():
    return mosaic.make_grid("healpix")


def test_automatic_nside_is_finer_than_a_third_of_the_psf():
    nside = mosaic.automatic_nside()
    assert nside == 128
    assert mosaic.make_grid("healpix").pixel_deg < mosaic.PSF_FWHM_DEG / 3.0
    assert mosaic.HealpixGrid(nside // 2).pixel_deg >= mosaic.PSF_FWHM_DEG / 3.0


@pytest.mark.parametrize("grid", [mosaic.HealpixGrid(64), mosaic.CarGrid(1.0)])
def test_tiles_split_and_join_every_pixel(grid):
    pixels = np.random.default_rng(0).integers(0, 12 * 64**2 if grid.kind == "healpix"
                                              else grid.n_ra * grid.n_dec, 5000)
    tiles, local = grid.split(pixels)
    assert np.all((local >= 0) & (local < grid.pixels_per_tile))
    assert all(grid.join(t, [k])[0] == p for t, k, p in zip(tiles, local, pixels))


def test_car_pixel_centres_and_wcs_agree():
    from astropy.wcs import WCS
    grid = mosaic.CarGrid(CAR_DEG)
    pixels = np.random.default_rng(1).integers(0, grid.n_ra * grid.n_dec, 1000)
    ra, dec = grid.centres(pixels)
    np.testing.assert_array_equal(grid.pixel_of(ra, dec), pixels)
    x, y = WCS(grid.wcs_keywords()).all_world2pix(ra, dec, 0)
    iy, ix = np.divmod(pixels, grid.n_ra)
    np.testing.assert_allclose(np.rint(x) % grid.n_ra, ix, atol=0)
    np.testing.assert_allclose(y, iy, atol=1e-6)


def test_reprojection_follows_the_wcs_whatever_the_sign_of_the_axes(healpix, bright_skies):
    """A sky image flipped east-left (array columns reversed, the CD matrix column negated)
    gives the same mosaic: no sign of the axes is assumed."""
    sky = bright_skies[0]
    flipped_wcs = dict(sky.wcs_keywords)
    flipped_wcs["CD1_1"], flipped_wcs["CD2_1"] = -flipped_wcs["CD1_1"], -flipped_wcs["CD2_1"]
    flipped = replace(sky, intensity=sky.intensity[:, ::-1], variance=sky.variance[:, ::-1],
                      pcode=sky.pcode[:, ::-1], wcs_keywords=flipped_wcs)
    maps = [mosaic.mosaic_map(healpix, combined(healpix, [s])) for s in (sky, flipped)]
    np.testing.assert_array_equal(maps[0].pixels, maps[1].pixels)
    np.testing.assert_allclose(maps[0].intensity, maps[1].intensity, rtol=1e-12)
    # and the source lies where the sky image's own frame puts it
    pixel = healpix.pixel_of(*SOURCE)
    ra, dec = healpix.centres([pixel])
    expected = sample_at(sky, ra[0], dec[0], "intensity") * flux_scale(sky.exposure)
    assert maps[0].value_at("intensity", [pixel])[0] == pytest.approx(expected, rel=1e-9)


def test_mosaic_sums_add_exactly(healpix, bright_skies):
    whole = combined(healpix, bright_skies)
    part_a, part_b = combined(healpix, bright_skies[:4]), combined(healpix, bright_skies[4:])
    merged = dict(part_a)
    for tile, sums in part_b.items():
        merged[tile] = merged[tile] + sums if tile in merged else sums
    assert sorted(merged) == sorted(whole)
    for tile in whole:
        for name in ("weighted_flux", "weight", "exposure", "ncontrib", "pcode"):
            values = getattr(whole[tile], name)  # the same sums in another order: rounding only
            np.testing.assert_allclose(getattr(merged[tile], name), values, rtol=0,
                                       atol=1e-12 * max(np.abs(values).max(), 1e-300))


def test_constant_source_flux_is_the_weighted_mean_and_significance_the_quadrature_sum(
        healpix, bright_skies):
    grid_map = mosaic.mosaic_map(healpix, combined(healpix, bright_skies))
    pixel = healpix.pixel_of(*SOURCE)
    ra, dec = healpix.centres([pixel])
    fluxes = np.array([sample_at(s, ra[0], dec[0], "intensity") * flux_scale(s.exposure)
                       for s in bright_skies])
    variances = np.array([sample_at(s, ra[0], dec[0], "variance") * flux_scale(s.exposure) ** 2
                          for s in bright_skies])
    snrs = np.array([sample_at(s, ra[0], dec[0], "snr") for s in bright_skies])
    weighted_mean = np.sum(fluxes / variances) / np.sum(1.0 / variances)
    assert grid_map.value_at("intensity", [pixel])[0] == pytest.approx(weighted_mean, rel=1e-9)
    assert grid_map.value_at("variance", [pixel])[0] == pytest.approx(
        1.0 / np.sum(1.0 / variances), rel=1e-9)
    assert grid_map.value_at("ncontrib", [pixel])[0] == 10
    assert grid_map.value_at("significance", [pixel])[0] == pytest.approx(
        np.sqrt(np.sum(snrs**2)), rel=0.1)
    # the source list: one source at the truth, its flux the weighted mean of the peak fluxes
    found = mosaic.find_mosaic_sources(healpix, grid_map, 7.0)
    assert len(found) == 1
    offset = np.degrees(np.arccos(np.clip(instrument.radec_to_unit(found[0].ra, found[0].dec)
                                          @ instrument.radec_to_unit(*SOURCE), -1, 1)))
    assert offset < 0.5
    assert found[0].flux == pytest.approx(0.1, rel=0.2)


def test_a_source_too_faint_for_one_observation_is_detected_in_the_mosaic_of_ten(healpix):
    rng = np.random.default_rng(31)
    skies = [simulated_sky(rng, pointing, [(*SOURCE, 0.045)]) for pointing in POINTINGS]
    single = [sample_at(s, *SOURCE, "snr") for s in skies]
    assert max(single) < 7.0 and 2.0 < np.mean(single) < 4.0  # no single detection
    found = mosaic.find_mosaic_sources(healpix, mosaic.mosaic_map(healpix, combined(healpix, skies)),
                                       7.0)
    assert len(found) == 1 and found[0].snr > 7.0
    assert np.degrees(np.arccos(instrument.radec_to_unit(found[0].ra, found[0].dec)
                                @ instrument.radec_to_unit(*SOURCE))) < 1.0


def test_source_free_mosaic_significance_is_standard_normal(healpix):
    rng = np.random.default_rng(5)
    skies = [simulated_sky(rng, pointing) for pointing in POINTINGS]
    significance = mosaic.mosaic_map(healpix, combined(healpix, skies)).significance
    assert len(significance) > 20000
    assert abs(np.mean(significance)) < 0.1
    assert abs(np.std(significance) - 1.0) < 0.1
    assert not mosaic.find_mosaic_sources(healpix, mosaic.mosaic_map(
        healpix, combined(healpix, skies)), 7.0)


def test_healpix_and_car_mosaics_agree_where_both_exist(healpix, bright_skies):
    car = mosaic.CarGrid(CAR_DEG)
    hp_map = mosaic.mosaic_map(healpix, combined(healpix, bright_skies))
    car_map = mosaic.mosaic_map(car, combined(car, bright_skies))
    ra, dec = car.centres(car_map.pixels)
    hp_values = hp_map.value_at("significance", healpix.pixel_of(ra, dec))
    both = np.isfinite(hp_values)
    assert both.mean() > 0.95
    # nearest-neighbour samples at centres up to half a pixel apart: close, not identical
    difference = hp_values[both] - car_map.significance[both]
    assert np.corrcoef(hp_values[both], car_map.significance[both])[0, 1] > 0.85
    assert abs(np.mean(difference)) < 0.05
    hp_source = mosaic.find_mosaic_sources(healpix, hp_map, 7.0)[0]
    car_source = mosaic.find_mosaic_sources(car, car_map, 7.0)[0]
    assert car_source.flux == pytest.approx(hp_source.flux, rel=0.15)
    assert np.degrees(np.arccos(instrument.radec_to_unit(hp_source.ra, hp_source.dec)
                                @ instrument.radec_to_unit(car_source.ra, car_source.dec))) < 0.5


def test_restored_images_keep_the_source_and_drop_its_side_lobes(healpix):
    """A bright source's coding noise piles up in a mosaic of raw images into spurious peaks;
    the cleaned images with the source restored as a clean PSF give one source, same flux."""
    from sky_fixtures import detector_expectation, mask_pattern

    from ecpi_beam.caldb import Caldb, default_caldb_dir
    from ecpi_beam.kernels.sky_analysis import SkyAnalyser, source_rows
    from ecpi_beam.params import ImagParams

    analyser = SkyAnalyser(mask_pattern(), Caldb.open(default_caldb_dir()).pixel_calibration(),
                           ImagParams())
    rng = np.random.default_rng(8)
    raw, restored = {}, {}
    for pointing in POINTINGS[:3]:
        quaternion = instrument.quaternion_from_pointing(*pointing)
        expected = detector_expectation(quaternion, 100.0, [(*SOURCE, 3.0)], 50.0)
        counts = rng.poisson(expected).astype(float)
        analysis = analyser.analyse(counts - 50.0, expected, np.ones((80, 80), bool),
                                    np.ones((80, 80)), "flat")
        sources = source_rows(analysis.detections, quaternion, 100.0)
        wcs = instrument.sky_wcs_keywords(quaternion)
        images = analysis.images
        as_product = instrument.sky_image_to_fits  # the orientation the WCS describes
        cleaned = mosaic.cleaned_rates(analysis.residual_snr, images.variance, images.pcode,
                                       100.0, wcs, sources)
        uncleaned = mosaic.SkyRates.from_counts(as_product(images.intensity),
                                                as_product(images.variance),
                                                as_product(images.pcode), 100.0, wcs)
        for target, rates in ((raw, uncleaned), (restored, cleaned)):
            for tile, sums in mosaic.image_to_grid(healpix, rates).items():
                target[tile] = target[tile] + sums if tile in target else sums
    raw_found = mosaic.find_mosaic_sources(healpix, mosaic.mosaic_map(healpix, raw), 7.0)
    restored_found = mosaic.find_mosaic_sources(healpix, mosaic.mosaic_map(healpix, restored), 7.0)
    assert len(raw_found) > 1
    assert len(restored_found) == 1
    # the restored source keeps IMAG's flux (its peak pixel reads a little lower on the
    # all-sky grid, whose pixel centres miss the source by up to a quarter degree)
    assert restored_found[0].flux == pytest.approx(raw_found[0].flux, rel=0.15)
