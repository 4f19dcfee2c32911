"""Background modes of BUBE (docs/science.md "Backgrounds"; ICD ECL-DET-UBC)."""
import numpy as np
import pytest
from scipy import integrate

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import background


@pytest.fixture(scope="module")
def pattern():
    return (np.random.default_rng(46).random((46, 46)) < 0.4).astype(np.uint8)


@pytest.fixture(scope="module")
def template(pattern):
    return background.sky_illumination_template(pattern)


SEED_MODES = ("no_correction", "flat", "shape", "flat_moretti", "shape_moretti",
              "shape_moretti_earth", "shape_moretti_earth_ref", "shape_moretti_smart")


def test_registry_lists_the_eight_seed_modes():
    assert background.available_modes() == SEED_MODES


def test_unknown_mode_names_itself_and_a_physics_mode_its_missing_input():
    counts = np.ones((80, 80))
    with pytest.raises(EcpiError, match="'bogus' is not a background mode; available: "
                       "no_correction, flat, shape, flat_moretti"):
        background.correct_background("bogus", counts, counts > 0)
    with pytest.raises(EcpiError, match="needs the predicted cxb visible image"):
        background.correct_background("shape_moretti_earth", counts, counts > 0)


def test_corner_formulas_against_numerical_integration():
    height, x0, x1, y0, y1 = 460.0, -30.0, 120.0, 40.0, 75.0

    def integrand(y, x, weight_by_cos):
        r2 = x * x + y * y + height * height
        return height / r2**1.5 * (height / np.sqrt(r2) if weight_by_cos else 1.0)

    for corner, by_cos in ((background.rectangle_corner_solid_angle, False),
                           (background.rectangle_corner_projected_solid_angle, True)):
        analytic = (corner(x1, y1, height) - corner(x0, y1, height) - corner(x1, y0, height)
                    + corner(x0, y0, height))
        numeric = integrate.dblquad(integrand, x0, x1, y0, y1, args=(by_cos,))[0]
        assert analytic == pytest.approx(numeric, rel=1e-8)
    # the whole plane: 2 pi sr, and pi for the cosine-weighted integral
    assert 4 * background.rectangle_corner_solid_angle(1e9, 1e9, 1.0) == pytest.approx(2 * np.pi)
    assert 4 * background.rectangle_corner_projected_solid_angle(1e9, 1e9, 1.0) == pytest.approx(
        np.pi, rel=1e-6)


def test_template_is_the_sum_over_open_elements(pattern, template):
    assert template.shape == (80, 80)
    # one pixel by brute force: sum over open elements of the element's projected solid angle
    i, j, h = 17, 62, instrument.MASK_HEIGHT_MM
    z0, y0 = instrument.pixel_centre_mm(i), instrument.pixel_centre_mm(j)
    corner = background.rectangle_corner_projected_solid_angle
    total = 0.0
    for m, n in zip(*np.nonzero(pattern)):
        zc = instrument.mask_element_centre_mm(m) - z0
        yc = instrument.mask_element_centre_mm(n) - y0
        half = instrument.MASK_PITCH_MM / 2
        total += (corner(zc + half, yc + half, h) - corner(zc - half, yc + half, h)
                  - corner(zc + half, yc - half, h) + corner(zc - half, yc - half, h))
    assert template[i, j] == pytest.approx(total, rel=1e-10)
    # a fully open mask: the central pixels see more sky than the corners
    open_template = background.sky_illumination_template(np.ones((46, 46), np.uint8))
    assert open_template[40, 40] > open_template[0, 0] > 0
    assert np.allclose(open_template, open_template[::-1, ::-1])
    efficiency = np.full((80, 80), 0.5)
    assert np.allclose(background.sky_illumination_template(pattern, efficiency), 0.5 * template)


def test_flat_fit_is_the_mean_with_poisson_error():
    rng = np.random.default_rng(1)
    counts = rng.poisson(40.0, (80, 80)).astype(float)
    good = np.ones((80, 80), bool)
    good[:, :3] = False
    counts[~good] = 1e6  # bad pixels must not enter the fit
    result = background.correct_background("flat", counts, good)
    value, error = result.coefficients["constant"]
    assert value == pytest.approx(counts[good].mean())
    assert error == pytest.approx(np.sqrt(value / good.sum()))
    assert np.all(result.corrected[~good] == 0) and np.all(result.variance[~good] == 0)
    assert np.allclose(result.variance[good], counts[good])
    assert abs(result.corrected[good].mean()) < 1e-9


def test_shape_fit_recovers_sky_and_flat_components_within_errors(pattern, template):
    good = np.ones((80, 80), bool)
    good[10:14, 30:34] = False
    normalised = template / template[good].mean()
    truth = {"sky_shape": 300.0, "constant": 100.0}
    pulls = []
    for seed in range(4):
        counts = np.random.default_rng(seed).poisson(
            truth["sky_shape"] * normalised + truth["constant"]).astype(float)
        result = background.correct_background("shape", counts, good, template)
        for name, expected in truth.items():
            value, error = result.coefficients[name]
            pulls.append((value - expected) / error)
        assert np.allclose(result.corrected + result.model, np.where(good, counts, 0))
    assert np.max(np.abs(pulls)) < 4.0
    assert 0.3 < np.std(pulls) < 2.0  # errors neither far too small nor far too large


def test_shape_removes_the_sky_shape_better_than_flat(template):
    good = np.ones((80, 80), bool)
    counts = np.random.default_rng(9).poisson(2000.0 * template / template.mean()).astype(float)
    residual = {mode: background.correct_background(mode, counts, good, template).corrected
                for mode in ("flat", "shape")}
    chi2 = {mode: np.sum(r**2 / counts) / counts.size for mode, r in residual.items()}
    assert chi2["shape"] == pytest.approx(1.0, abs=0.1)
    assert chi2["flat"] > 2.0


def test_no_correction_keeps_the_counts_and_shape_needs_a_template(pattern):
    counts = np.random.default_rng(2).poisson(5.0, (80, 80)).astype(float)
    good = np.ones((80, 80), bool)
    result = background.correct_background("no_correction", counts, good)
    assert np.array_equal(result.corrected, counts) and np.all(result.model == 0)
    with pytest.raises(EcpiError, match="template"):
        background.correct_background("shape", counts, good)
    from_context = background.correct_background("shape", counts, good,
                                                 context={"mask_pattern": pattern})
    assert set(from_context.coefficients) == {"sky_shape", "constant"}
