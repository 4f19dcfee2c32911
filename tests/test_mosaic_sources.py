"""MOSA's sources (kernels/mosaic_sources.py) on small synthetic sky images: local tangent-plane
grids that merge exactly, positions refined by the PSF fit to the statistics (not the all-sky
pixels), fluxes by forced photometry in each image, unbiased, with errors that hold.

Images are made at the detector-image level (sky_fixtures: Poisson counts of point sources
over a flat background through the CALDB mask, imaged by the IMAG kernels); the cleaned ones
through IMAG's own analysis (SkyAnalyser), as the pipeline makes them."""
import functools

import numpy as np
import pytest
from sky_fixtures import detector_expectation, mask_pattern, simulated_sky

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.kernels import detection, imaging, mosaic
from ecpi_beam.kernels import mosaic_sources as ms
from ecpi_beam.kernels.sky_analysis import SkyAnalyser, source_rows
from ecpi_beam.params import ImagParams

FIELD = (210.0, -35.0)
EXPOSURE = 100.0


def offset_arcmin(a, b):
    cosine = instrument.radec_to_unit(*a) @ instrument.radec_to_unit(*b)
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))) * 60.0)


def pointings(rng, n, centre=FIELD, radius=(2.0, 9.0)):
    out = []
    for _ in range(n):
        angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(*radius)
        los = np.array([1.0, np.tan(np.radians(distance * np.cos(angle))),
                        np.tan(np.radians(distance * np.sin(angle)))])
        quaternion = instrument.quaternion_from_pointing(*centre)
        ra, dec = instrument.los_to_radec(los / np.linalg.norm(los), quaternion)
        out.append((float(ra), float(dec), float(rng.uniform(0, 360))))
    return out


def raw_rates(sky):
    return mosaic.SkyRates.from_counts(sky.intensity, sky.variance, sky.pcode, sky.exposure,
                                       sky.wcs_keywords)


@functools.lru_cache(maxsize=1)
def analyser():
    return SkyAnalyser(mask_pattern(), Caldb.open(default_caldb_dir()).pixel_calibration(),
                       ImagParams())


def cleaned_observation(rng, pointing, sources, background=50.0):
    """(SkyRates of the cleaned image with IMAG's sources to restore, IMAG's SourceRows)."""
    quaternion = instrument.quaternion_from_pointing(*pointing)
    expected = detector_expectation(quaternion, EXPOSURE, sources, background)
    counts = rng.poisson(expected).astype(float)
    analysis = analyser().analyse(counts - background, expected, np.ones((80, 80), bool),
                                  np.ones((80, 80)), "flat")
    rows = source_rows(analysis.detections, quaternion, EXPOSURE)
    rates = mosaic.cleaned_rates(analysis.residual_snr, analysis.images.variance,
                                 analysis.images.pcode, EXPOSURE,
                                 instrument.sky_wcs_keywords(quaternion), rows)
    return rates, rows


def candidates_of(rates_list, snr=5.0):
    grid = mosaic.make_grid("healpix")
    tiles = {}
    for rates in rates_list:
        for tile, sums in mosaic.image_to_grid(grid, rates).items():
            tiles[tile] = tiles[tile] + sums if tile in tiles else sums
    return mosaic.find_mosaic_sources(grid, mosaic.mosaic_map(grid, tiles), snr)


def refined(candidate, rates_list):
    total = None
    for rates in rates_list:
        part = ms.position_likelihood(rates, candidate.ra, candidate.dec, 0.1)
        if part is not None:
            total = part if total is None else total + part
    return ms.refine(candidate, total)


def light_curve(row, rates_list):
    points = []
    for index, rates in enumerate(rates_list):
        measured = ms.forced_flux(rates, row.ra, row.dec, 0.1)
        if measured is not None:
            points.append(ms.LightCurvePoint(f"{index:010d}", index, index + 1.0, *measured[:2],
                                             rates.exposure * measured[2], measured[2]))
    return points


# ============================================================================================
# Geometry
# ============================================================================================
def test_the_tan_mapping_is_astropy_wcs_and_the_local_grid_a_sky_image_at_its_centre():
    from astropy.wcs import WCS

    rng = np.random.default_rng(3)
    for ra0, dec0, roll in pointings(rng, 5, radius=(0.0, 80.0)):
        keywords = instrument.sky_wcs_keywords(instrument.quaternion_from_pointing(ra0, dec0, roll))
        ra = ra0 + rng.uniform(-40, 40, 500) / max(np.cos(np.radians(dec0)), 0.2)
        dec = np.clip(dec0 + rng.uniform(-40, 40, 500), -89.0, 89.0)
        expected = WCS(keywords).all_world2pix(ra, dec, 0)
        np.testing.assert_allclose(mosaic._wcs_pixels(keywords, ra, dec), expected, atol=1e-8)
    # the local grid: one sky-image pixel apart at its centre, rows north, columns east
    ra, dec = ms.local_grid(*FIELD, half=1, step=1.0)
    centre = (ra[4], dec[4])
    assert offset_arcmin(centre, FIELD) < 1e-3
    assert offset_arcmin((ra[5], dec[5]), FIELD) == pytest.approx(instrument.SKY_PIXEL_DEG * 60,
                                                                  rel=1e-4)
    assert dec[7] > dec[4] and ra[5] > ra[4]  # north, then east


# ============================================================================================
# Exact merging
# ============================================================================================
def test_local_grids_merge_exactly_in_any_grouping():
    rng = np.random.default_rng(11)
    skies = [raw_rates(simulated_sky(rng, p[:2], [(*FIELD, 0.05)], roll=p[2]))
             for p in pointings(rng, 6)]
    parts = [ms.position_likelihood(rates, *FIELD, 0.1) for rates in skies]
    whole = functools.reduce(lambda a, b: a + b, parts)
    grouped = (parts[0] + parts[3] + parts[5]) + (parts[4] + (parts[1] + parts[2]))
    for name in ("a", "b"):
        np.testing.assert_allclose(getattr(grouped, name), getattr(whole, name), rtol=1e-12)
    assert whole.images == grouped.images == 6
    assert len(whole.a) == (2 * ms.TRIAL_HALF + 1) ** 2


def test_an_image_that_does_not_see_the_source_adds_nothing():
    rng = np.random.default_rng(2)
    far = raw_rates(simulated_sky(rng, (FIELD[0] + 120.0, 10.0)))
    assert ms.position_likelihood(far, *FIELD, 0.1) is None
    assert ms.forced_flux(far, *FIELD, 0.1) is None


# ============================================================================================
# Positions and fluxes
# ============================================================================================
@pytest.fixture(scope="module")
def bright_campaign():
    """Eight cleaned observations of two sources (0.3 and 0.06 count s-1 cm-2, ~40 and ~10
    sigma a piece at the centre of the field) at sub-pixel positions, pointings and rolls."""
    rng = np.random.default_rng(2026)
    truth = [(FIELD[0] + 0.37, FIELD[1] - 0.21, 0.3), (FIELD[0] - 4.13, FIELD[1] + 2.71, 0.06)]
    observations = [cleaned_observation(rng, p, truth) for p in pointings(rng, 8)]
    return truth, observations


def test_positions_are_limited_by_statistics_not_by_the_all_sky_pixels(bright_campaign):
    truth, observations = bright_campaign
    rates = [r for r, _ in observations]
    found = candidates_of(rates)
    assert len(found) == 2
    for ra, dec, flux in truth:
        candidate = min(found, key=lambda c: offset_arcmin((c.ra, c.dec), (ra, dec)))
        row = refined(candidate, rates)
        single = [min(offset_arcmin((r.ra, r.dec), (ra, dec)) for r in rows)
                  for _, rows in observations if rows]
        offset = offset_arcmin((row.ra, row.dec), (ra, dec))
        # a HEALPix pixel is 27.5' across; the refined position is within the statistics
        assert offset < 0.5 * np.median(single) + 1.0, (offset, single)
        assert offset < row.err_rad_arcmin
        assert row.snr == candidate.snr  # the detection statistic


def test_the_flux_is_the_weighted_mean_of_the_single_observation_fluxes(bright_campaign):
    truth, observations = bright_campaign
    rates = [r for r, _ in observations]
    ra, dec, flux = truth[0]
    row = refined(min(candidates_of(rates), key=lambda c: -c.snr), rates)
    points = light_curve(row, rates)
    assert len(points) == len(rates)
    final = ms.with_flux(row, points)
    singles = [min(rows, key=lambda r: offset_arcmin((r.ra, r.dec), (ra, dec))).flux
               for _, rows in observations]
    assert final.flux == pytest.approx(np.mean(singles), rel=0.02)
    assert final.flux == pytest.approx(flux, rel=0.05)
    # and each light-curve point is the observation's own IMAG flux, held at the mosaic position
    for point, single in zip(points, singles):
        assert point.flux == pytest.approx(single, rel=0.03)
    expected_error = 1.0 / np.sqrt(np.sum([1.0 / p.flux_err**2 for p in points]))
    assert final.flux_err == pytest.approx(expected_error, rel=1e-9)


def test_forced_fluxes_of_sources_no_single_image_detects_are_unbiased_with_honest_errors():
    """A source below IMAG's threshold stays in the residuals: forced photometry in each
    image's own pixels measures it without bias, and its pulls have unit spread."""
    rng = np.random.default_rng(7)
    pulls, ratios = [], []
    for trial in range(6):
        source = (FIELD[0] + rng.uniform(-3, 3), FIELD[1] + rng.uniform(-3, 3), 0.03)
        skies = [raw_rates(simulated_sky(rng, p[:2], [source], roll=p[2]))
                 for p in pointings(rng, 5)]
        points = [ms.forced_flux(rates, source[0], source[1], 0.1) for rates in skies]
        pulls += [(flux - source[2]) / error for flux, error, _ in points]
        flux, error = ms.weighted_flux([ms.LightCurvePoint("x", 0, 1, f, e, 1, p)
                                        for f, e, p in points])
        ratios.append(flux / source[2])
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.05)
    assert 0.7 < np.std(pulls) < 1.3 and abs(np.mean(pulls)) < 0.5


def test_amplitude_at_a_known_position_is_the_generalised_least_squares_amplitude():
    """detection.amplitude_at on a noiseless PSF at a sub-pixel position, over a constant."""
    rows, cols = np.mgrid[0:21, 0:21]
    intensity = 3.0 * detection.separable_psf(rows - 10.3, cols - 9.6) + 0.5
    sky = imaging.SkyImages(intensity, np.full(intensity.shape, 0.04), intensity / 0.2,
                            np.ones(intensity.shape))
    flux, error = detection.amplitude_at(sky, 10.3, 9.6, 5)
    assert flux == pytest.approx(3.0, rel=1e-6)
    assert 0 < error < 0.5
    sky_unmeasured = imaging.SkyImages(intensity, np.full(intensity.shape, np.inf),
                                       intensity * 0, np.ones(intensity.shape))
    assert detection.amplitude_at(sky_unmeasured, 10.3, 9.6, 5) is None


def test_candidates_that_converge_on_one_source_are_one():
    row = ms.SourceRow(ra=10.0, dec=5.0, err_rad_arcmin=2.0, snr=30.0, flux=1.0, flux_err=0.1,
                       row=np.nan, col=np.nan, pcode=1.0)
    twin = ms.replace(row, ra=10.1, snr=12.0)
    other = ms.replace(row, ra=12.0, snr=9.0)
    kept = ms.distinct([twin, other, row])
    assert kept == [row, other]
