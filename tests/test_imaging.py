"""Balanced cross-correlation sky images (docs/science.md "Coded-mask imaging")."""
import numpy as np
import pytest

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import imaging


@pytest.fixture(scope="module")
def plan():
    pattern = (np.random.default_rng(46).random((46, 46)) < 0.4).astype(np.uint8)
    return imaging.make_correlation_plan(instrument.resample_mask(pattern))


@pytest.fixture(scope="module")
def weights():
    w = np.ones((80, 80))
    w[np.random.default_rng(7).random((80, 80)) < 0.03] = 0.0  # a few dead pixels
    return w


def direct_correlation(detector, kernel, row, col):
    total = 0.0
    for i in range(80):
        for j in range(80):
            k, m = i + row - instrument.SHADOW_OFFSET, j + col - instrument.SHADOW_OFFSET
            if 0 <= k < 120 and 0 <= m < 120:
                total += detector[i, j] * kernel[k, m]
    return total


def test_fft_correlation_matches_a_direct_sum(plan):
    detector = np.random.default_rng(0).random((80, 80))
    mask = plan.resampled_mask
    kernels = {"positive": mask, "negative": 1 - mask, "cross": mask * (1 - mask)}
    for name, kernel in kernels.items():
        sky = imaging.cross_correlate(plan, detector, name)
        assert sky.shape == (199, 199)
        for row, col in ((0, 0), (99, 99), (198, 198), (5, 170), (150, 33)):
            assert sky[row, col] == pytest.approx(direct_correlation(detector, kernel, row, col),
                                                  rel=1e-9, abs=1e-9)


def test_point_source_peaks_at_its_pixel_with_intensity_n(plan, weights):
    for row, col in ((99, 99), (120, 80), (40, 160)):
        detector = imaging.forward_project(plan, row, col, 25.0)
        sky = imaging.balanced_sky_image(plan, detector, np.maximum(detector, 1.0), weights)
        coded = sky.pcode > 0.1
        peak = np.unravel_index(np.argmax(np.where(coded, sky.intensity, -np.inf)), (199, 199))
        assert peak == (row, col)
        assert sky.intensity[row, col] == pytest.approx(25.0, rel=1e-9)


def test_flat_background_correlates_to_zero(plan, weights):
    flat = np.full((80, 80), 100.0)
    sky = imaging.balanced_sky_image(plan, flat, flat, weights)
    measured = np.isfinite(sky.variance)
    assert measured.sum() > 150 * 150
    assert np.max(np.abs(sky.intensity[measured])) < 1e-8 * 100


def test_snr_of_source_free_poisson_data_is_standard_normal(plan, weights):
    snr = []
    for seed in range(3):
        counts = np.random.default_rng(seed).poisson(50.0, (80, 80)).astype(float)
        sky = imaging.balanced_sky_image(plan, counts - 50.0, counts, weights)
        snr.append(sky.snr[sky.pcode > 0.1])
    snr = np.concatenate(snr)
    assert abs(snr.std() - 1.0) < 0.1
    assert abs(snr.mean()) < 0.1


def test_variance_is_exact_for_the_linear_estimator(plan, weights):
    """Monte-Carlo variance of S at a few pixels against V (includes the G+ G- term)."""
    rng = np.random.default_rng(3)
    variance = rng.uniform(5.0, 50.0, (80, 80))
    pixels = (np.array([99, 60, 150]), np.array([99, 140, 50]))
    draws = np.array([imaging.balanced_sky_image(
        plan, rng.normal(0.0, np.sqrt(variance)), variance, weights).intensity[pixels]
        for _ in range(150)])
    sky = imaging.balanced_sky_image(plan, np.zeros((80, 80)), variance, weights)
    assert np.allclose(draws.var(axis=0), sky.variance[pixels], rtol=0.35)  # 3 sigma of 150 draws


def test_partial_coding_and_unmeasured_pixels(plan):
    ones = np.ones((80, 80))
    sky = imaging.balanced_sky_image(plan, ones, ones, ones)
    assert sky.pcode[99, 99] == pytest.approx(1.0)
    # fully coded within +-20 pixels of the centre (120 - 80 = 40 cells of shift)
    assert np.allclose(sky.pcode[79:120, 79:120], 1.0)
    assert sky.pcode[0, 0] == pytest.approx(1.0 / 6400)
    unmeasured = sky.pcode < imaging.PCODE_MIN_IMAGE
    assert np.all(np.isinf(sky.variance[unmeasured])) and np.all(sky.snr[unmeasured] == 0)
    assert np.all(sky.intensity[unmeasured] == 0)
    with pytest.raises(EcpiError, match="weight 0"):
        imaging.balanced_sky_image(plan, ones, ones, np.zeros((80, 80)))


def test_irf_corrections_registry(plan):
    ones = np.ones((80, 80))
    detector = imaging.forward_project(plan, 60, 130, 10.0)
    sky = imaging.balanced_sky_image(plan, detector, np.maximum(detector, 1), ones)
    assert imaging.irf_correction("no_correction")(sky) is sky
    corrected = imaging.irf_correction("cos_theta")(sky)
    cos_theta = instrument.sky_grid_los()[60, 130, 0]
    assert corrected.intensity[60, 130] == pytest.approx(10.0 / cos_theta)
    assert np.allclose(corrected.snr, sky.snr)
    assert imaging.irf_correction("cos_theta").factor_at(60, 130) == pytest.approx(cos_theta)
    with pytest.raises(EcpiError, match="'irf' needs the CALDB ECL-RSP-IRF"):
        imaging.irf_correction("irf")
    with pytest.raises(EcpiError, match="'psf' is not known; available: no_correction, "
                                        "cos_theta, irf"):
        imaging.check_irf_correction("psf")


def test_irf_correction_is_the_band_averaged_caldb_factor():
    caldb = Caldb.open(default_caldb_dir())
    irf, arf = caldb.irf(), caldb.arf()
    soft = imaging.irf_correction("irf", irf=irf, arf=arf, energy_range_kev=(13.0, 60.0))
    hard = imaging.irf_correction("irf", irf=irf, arf=arf, energy_range_kev=(100.0, 150.0))
    assert soft.spectrum == imaging.IRF_SPECTRUM and "photon index 2" in soft.spectrum
    assert soft.factor_at(instrument.SKY_CENTRE, instrument.SKY_CENTRE) == pytest.approx(1.0)
    row, col = instrument.SKY_CENTRE, instrument.SKY_CENTRE + 59.0  # 30 deg off axis
    angle = float(instrument.off_axis_angle_deg(instrument.sky_pixel_to_los(row, col)))
    assert angle == pytest.approx(30.0, abs=0.5)
    # below the Ta K edge the walls are opaque and CdTe absorbs all: cos(theta) x wall shading
    wall = 1.0 - 4.0 / np.pi * 0.6 * np.tan(np.radians(angle)) / (540.0 / 46.0)
    assert soft.factor_at(row, col) == pytest.approx(np.cos(np.radians(angle)) * wall, rel=0.01)
    # at high energy the longer CdTe path raises the factor above cos(theta)
    assert hard.factor_at(row, col) > np.cos(np.radians(angle)) > soft.factor_at(row, col)
    assert soft.factor[row, int(col)] == pytest.approx(
        float(irf.factor_at(instrument.off_axis_angle_deg(instrument.sky_pixel_to_los(
            row, int(col))), 30.0)), rel=0.01)


def test_forward_projection_is_the_shifted_mask_and_bilinear(plan):
    mask = plan.resampled_mask
    on_axis = imaging.forward_project(plan, 99, 99, 2.0)
    assert np.allclose(on_axis, 2.0 * mask[20:100, 20:100])
    half = imaging.forward_project(mask, 99.5, 99, 1.0)
    assert np.allclose(half, 0.5 * (mask[20:100, 20:100] + mask[21:101, 20:100]))
    edge = imaging.forward_project(plan, 0, 0)  # only detector pixel (79, 79) sees cell (0, 0)
    assert edge[79, 79] == mask[0, 0] and edge.sum() == mask[0, 0]
    assert imaging.forward_project(plan, -5, 50).sum() == 0


def test_estimator_coefficients_reproduce_intensity_and_variance(plan, weights):
    rng = np.random.default_rng(11)
    detector, variance = rng.random((80, 80)), rng.uniform(1.0, 3.0, (80, 80))
    sky = imaging.balanced_sky_image(plan, detector, variance, weights)
    rows, cols = np.array([99, 10, 180, 0]), np.array([99, 150, 20, 0])
    coefficients = imaging.estimator_coefficients(plan, weights, rows, cols)
    measured = np.isfinite(sky.variance[rows, cols])
    assert not measured[-1] and np.all(coefficients[-1] == 0)
    assert np.allclose(np.einsum("kij,ij->k", coefficients, detector)[measured],
                       sky.intensity[rows, cols][measured])
    assert np.allclose(np.einsum("kij,ij->k", coefficients**2, variance)[measured],
                       sky.variance[rows, cols][measured])
