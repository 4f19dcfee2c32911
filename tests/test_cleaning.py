"""Iterative source cleaning: a bright source's side lobes are removed, not detected."""
import numpy as np
import pytest

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.kernels import cleaning, detection, imaging

BACKGROUND = 40.0
WEIGHTS = np.ones((80, 80))


@pytest.fixture(scope="module")
def mask():
    pattern = Caldb.open(default_caldb_dir()).mask_pattern()
    return pattern, imaging.make_correlation_plan(instrument.resample_mask(pattern))


def observe(pattern, sources, seed):
    """Flat-subtracted Poisson counts of exact thin-mask shadows of (row, col, n) sources."""
    expected = np.full((80, 80), BACKGROUND)
    for row, col, n in sources:
        expected += n * cleaning.source_shadowgram(pattern, row, col)
    counts = np.random.default_rng(seed).poisson(expected).astype(float)
    return counts - counts.mean(), counts


def test_shadowgram_is_the_open_fraction_of_the_mask():
    pattern = Caldb.open(default_caldb_dir()).mask_pattern()
    on_axis = cleaning.source_shadowgram(pattern, instrument.SKY_CENTRE, instrument.SKY_CENTRE)
    assert on_axis.mean() == pytest.approx(pattern[10:36, 10:36].mean(), abs=0.05)
    assert 0.0 <= on_axis.min() and on_axis.max() <= 1.0 + 1e-12
    # outside the field nothing reaches the detector
    assert cleaning.source_shadowgram(pattern, 0.0, 0.0).sum() < 1e-9


def test_shadow_amplitudes_are_fitted_with_the_background_terms():
    rng = np.random.default_rng(0)
    shadows = [rng.random((80, 80)), rng.random((80, 80))]
    slope = np.linspace(0.0, 1.0, 80)[None, :] * np.ones((80, 1))
    data = 7.5 * shadows[0] + 2.0 * shadows[1] + 100.0 + 30.0 * slope
    amplitudes, model = cleaning.fit_shadowgrams(data, np.ones_like(data), WEIGHTS, shadows,
                                                 [np.ones((80, 80)), slope])
    assert amplitudes == pytest.approx([7.5, 2.0])
    np.testing.assert_allclose(model, data)


def test_bright_source_side_lobes_are_cleaned_and_a_faint_neighbour_is_found(mask):
    pattern, plan = mask
    bright, faint = (104.3, 96.8, 60.0), (80.4, 120.6, 3.0)
    data, counts = observe(pattern, [bright, faint], seed=3)
    sky = imaging.balanced_sky_image(plan, data, counts, WEIGHTS)
    raw = detection.find_sources(sky, 7.0, 0.1, 5, plan=plan, weights=WEIGHTS)
    assert len(raw) > 2  # without cleaning, side lobes of the bright source pass the threshold
    cleaned = cleaning.detect_and_clean(plan, pattern, data, counts, WEIGHTS, snr_threshold=7.0,
                                        pcode_min=0.1, win_dim=5,
                                        background_components=[np.ones((80, 80))])
    assert len(cleaned.detections) == 2
    first, second = cleaned.detections
    assert np.hypot(first.row - bright[0], first.col - bright[1]) < 0.1
    assert np.hypot(second.row - faint[0], second.col - faint[1]) < 0.5
    assert second.flux == pytest.approx(faint[2], abs=4 * second.flux_err)
    residual = imaging.balanced_sky_image(plan, cleaned.residual, counts, WEIGHTS)
    measured = residual.pcode > 0.1
    assert np.abs(residual.snr[measured]).max() < 6.0
    assert np.std(residual.snr[measured]) == pytest.approx(1.0, abs=0.15)


def test_empty_field_stays_empty(mask):
    pattern, plan = mask
    data, counts = observe(pattern, [], seed=11)
    cleaned = cleaning.detect_and_clean(plan, pattern, data, counts, WEIGHTS, snr_threshold=7.0,
                                        pcode_min=0.1, win_dim=5)
    assert cleaned.detections == ()
    np.testing.assert_array_equal(cleaned.residual, data)
