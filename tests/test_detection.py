"""Peak finding, PSF fitting and error radii (docs/science.md "Coded-mask imaging")."""
import numpy as np
import pytest

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import detection, imaging

BACKGROUND = 30.0


@pytest.fixture(scope="module")
def plan():
    pattern = (np.random.default_rng(46).random((46, 46)) < 0.4).astype(np.uint8)
    return imaging.make_correlation_plan(instrument.resample_mask(pattern))


WEIGHTS = np.ones((80, 80))


def observe(plan, sources, seed):
    """Poisson counts of point sources (row, col, n) on a flat background, flat-subtracted."""
    expected = np.full((80, 80), BACKGROUND)
    for row, col, n in sources:
        expected += imaging.forward_project(plan, row, col, n)
    counts = np.random.default_rng(seed).poisson(expected).astype(float)
    return imaging.balanced_sky_image(plan, counts - counts.mean(), counts, WEIGHTS)


@pytest.mark.parametrize("use_plan", [True, False])
def test_fractional_source_is_recovered_to_a_tenth_of_a_pixel(plan, use_plan):
    row, col, n = 110.3, 85.7, 20.0
    sky = observe(plan, [(row, col, n)], seed=1)
    kwargs = {"plan": plan, "weights": WEIGHTS} if use_plan else {}
    found = detection.find_sources(sky, snr_threshold=7.0, pcode_min=0.1, win_dim=5, **kwargs)
    best = found[0]
    assert best.snr > 50
    assert abs(best.row - row) < 0.1 and abs(best.col - col) < 0.1
    assert 0 < best.row_err < 0.1 and 0 < best.col_err < 0.1
    assert best.pcode == pytest.approx(1.0)
    tolerance = 4 * best.flux_err if use_plan else 0.05 * n  # the analytic PSF is approximate
    assert abs(best.flux - n) < tolerance


def test_position_errors_match_the_scatter_over_noise_realisations(plan):
    row, col = 95.6, 101.2
    fits = []
    for seed in range(12):
        sky = observe(plan, [(row, col, 3.0)], seed=100 + seed)
        best = detection.find_sources(sky, 7.0, 0.1, 4, max_sources=1, plan=plan,
                                      weights=WEIGHTS)[0]
        fits.append((best.row - row, best.col - col, best.row_err, best.col_err,
                     (best.flux - 3.0) / best.flux_err))
    fits = np.array(fits)
    scatter = np.sqrt(np.mean(fits[:, :2] ** 2))
    quoted = np.sqrt(np.mean(fits[:, 2:4] ** 2))
    assert 0.5 < scatter / quoted < 2.0
    assert np.all(np.abs(fits[:, 4]) < 4.0)


def test_pure_noise_gives_no_detection_above_7(plan):
    for seed in range(4):
        sky = observe(plan, [], seed=200 + seed)
        assert detection.find_sources(sky, 7.0, 0.1, 5, plan=plan, weights=WEIGHTS) == []


def test_two_separated_sources_are_both_found(plan):
    truth = [(80.4, 90.2, 4.0), (125.0, 120.6, 3.0)]
    sky = observe(plan, truth, seed=5)
    found = detection.find_sources(sky, 7.0, 0.1, 4, plan=plan, weights=WEIGHTS)
    assert len(found) >= 2
    for row, col, _ in truth:
        distances = [np.hypot(d.row - row, d.col - col) for d in found[:2]]
        assert min(distances) < 0.5
    assert found[0].snr >= found[1].snr and all(d.snr >= 7.0 for d in found)


def test_max_sources_and_win_dim_validation(plan):
    sky = observe(plan, [(80.0, 90.0, 4.0), (125.0, 120.0, 4.0)], seed=6)
    assert len(detection.find_sources(sky, 7.0, 0.1, 3, max_sources=1)) == 1
    with pytest.raises(EcpiError, match="win_dim"):
        detection.find_sources(sky, 7.0, 0.1, 0.5)


def test_analytic_profile_matches_the_numerical_psf(plan):
    psf = detection.numerical_psf(plan, WEIGHTS, 99, 99, 6)
    offsets = np.arange(-3, 4, dtype=float)
    numeric = 0.5 * (psf(offsets, 0 * offsets) + psf(0 * offsets, offsets))
    assert np.allclose(detection.mask_element_profile(offsets), numeric, atol=0.05)
    assert detection.mask_element_profile(0.0) == pytest.approx(1.0)
    assert detection.mask_element_profile(4.0) == 0.0  # support: 2.609 + 1 pixels
