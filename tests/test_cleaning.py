"""Iterative source cleaning: a bright source's side lobes are removed, not detected."""
import numpy as np
import pytest

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.kernels import cleaning, detection, imaging
from ecpi_beam.kernels.occultation import geometric_partial_coding

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


def crowded_field(pattern, plan, n_sources=40, background=200.0, seed=41):
    """n_sources at least 8 pixels apart where pcode >= 0.5, whose SNR alone (with the counts of
    all) is spread from 9 to 100: expected SNR 9 is measured above 7 with 97 % probability."""
    rng = np.random.default_rng(seed)
    positions = []
    while len(positions) < n_sources:
        row, col = rng.uniform(30, 169, 2)
        if geometric_partial_coding(instrument.sky_pixel_to_los(row, col)) >= 0.5 and all(
                np.hypot(row - r, col - c) >= 8 for r, c in positions):
            positions.append((row, col))
    shadows = [cleaning.source_shadowgram(pattern, row, col) for row, col in positions]
    target = np.geomspace(9.0, 100.0, n_sources)
    amplitudes = np.ones(n_sources)
    for _ in range(3):  # each source's SNR depends on the counts of all the others
        expected = background + sum(a * s for a, s in zip(amplitudes, shadows))
        unit_snr = np.array([
            imaging.balanced_sky_image(plan, s, expected, WEIGHTS).snr[round(r), round(c)]
            for s, (r, c) in zip(shadows, positions)])
        amplitudes = target / unit_snr
    expected = background + sum(a * s for a, s in zip(amplitudes, shadows))
    counts = np.random.default_rng(seed + 1).poisson(expected).astype(float)
    return [(r, c, a) for (r, c), a in zip(positions, amplitudes)], counts


def counting(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_crowded_field_of_40_sources_is_cleaned_completely(mask, monkeypatch):
    pattern, plan = mask
    truth, counts = crowded_field(pattern, plan)
    images = counting(monkeypatch, imaging, "balanced_sky_image")
    responses = counting(monkeypatch, imaging, "balanced_intensity")
    cleaned = cleaning.detect_and_clean(plan, pattern, counts - counts.mean(), counts, WEIGHTS,
                                        snr_threshold=7.0, pcode_min=0.1, win_dim=5,
                                        background_components=[np.ones((80, 80))])
    assert not cleaned.limit_reached
    # linear cost: whole images only for the joint fits (4, 8, 16, 32 sources, the end and
    # the refit at the measured positions), a fixed number of one-source responses per source
    assert len(images) <= 8
    assert len(responses) <= 8 * len(truth)
    matched, ratios = 0, []
    for row, col, amplitude in truth:
        near = [d for d in cleaned.detections if np.hypot(d.row - row, d.col - col) < 1.5]
        if near:
            matched += 1
            ratios.append(near[0].flux / amplitude)
    assert matched == 40  # the old cleaning stopped at 20
    assert len(cleaned.detections) == 40  # and nothing spurious
    snr = sorted(d.snr for d in cleaned.detections)
    assert snr[0] < 10 and snr[-1] > 80
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.03)
    residual = cleaned.residual_sky
    rows, cols = np.indices(residual.snr.shape)
    away = residual.pcode > 0.1
    for det in cleaned.detections:  # what is left on a source is the model's limit
        away &= np.hypot(rows - det.row, cols - det.col) >= cleaning.SAME_SOURCE_PIXELS
    assert residual.snr[away].max() < 7.0
    assert np.std(residual.snr[away]) == pytest.approx(1.0, abs=0.15)


def test_the_safety_limit_is_reported(mask):
    pattern, plan = mask
    truth, counts = crowded_field(pattern, plan, n_sources=6, seed=3)
    cleaned = cleaning.detect_and_clean(plan, pattern, counts - counts.mean(), counts, WEIGHTS,
                                        snr_threshold=7.0, pcode_min=0.1, win_dim=5,
                                        max_sources=4)
    assert cleaned.limit_reached and len(cleaned.detections) == 4
