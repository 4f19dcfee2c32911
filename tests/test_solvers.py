"""kernels/solvers.py against scipy.optimize (nnls, least_squares) and the two numpy image
helpers of kernels/detection.py against scipy.ndimage: same answers, so the pipeline can do
without importing scipy on its path."""
import numpy as np
import pytest
from scipy import ndimage, optimize

from ecpi_beam.kernels import detection, solvers


def _nnls_problems(rng, n_problems):
    for index in range(n_problems):
        m, n = int(rng.integers(3, 60)), int(rng.integers(1, 8))
        design = rng.normal(size=(m, n))
        if index % 3 == 0:
            design = np.abs(design)  # background terms are non-negative images
        if index % 7 == 0 and n > 1:
            design[:, 0] = design[:, 1]  # a degenerate pair of terms
        yield design, rng.normal(size=m) * 3 + design @ np.abs(rng.normal(size=n))


def test_nnls_matches_scipy():
    rng = np.random.default_rng(1)
    for design, target in _nnls_problems(rng, 400):
        expected, expected_norm = optimize.nnls(design, target)
        x, norm = solvers.nnls(design, target)
        assert (x >= 0).all()
        assert norm <= expected_norm * (1 + 1e-4) + 1e-12
        if np.linalg.matrix_rank(design) == design.shape[1]:  # unique solution
            np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-8)


def test_nnls_keeps_a_negative_direction_at_zero():
    design = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x, _ = solvers.nnls(design, np.array([2.0, -3.0, -1.0]))
    np.testing.assert_allclose(x, [0.5, 0.0], atol=1e-12)


def _peak(p, rows, cols):
    amplitude, d_row, d_col, constant = p
    return amplitude * np.exp(-((rows - d_row) ** 2 + (cols - d_col) ** 2) / (2 * 1.3**2)) + constant


@pytest.mark.parametrize("seed", [2, 3])
def test_bounded_least_squares_matches_scipy(seed):
    """PSF-like fits (amplitude, two shifts bounded to +-1.5, constant), sources inside and
    beyond the bounds: the same minimum as least_squares(x_scale='jac'), and the same
    covariance (J^T J)^-1."""
    rng = np.random.default_rng(seed)
    rows, cols = (grid.ravel() for grid in np.mgrid[-5:6, -5:6])
    lower, upper = [-np.inf, -1.5, -1.5, -np.inf], [np.inf, 1.5, 1.5, np.inf]
    for _ in range(150):
        truth = [rng.uniform(1, 50), rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(-1, 1)]
        data = _peak(truth, rows, cols) + rng.normal(size=rows.size)

        def residuals(p, data=data):
            return data - _peak(p, rows, cols)

        start = [data.max(), 0.0, 0.0, float(np.median(data))]
        expected = optimize.least_squares(residuals, start, bounds=(lower, upper),
                                          x_scale="jac")
        fit = solvers.bounded_least_squares(residuals, start, lower, upper)
        assert fit.cost <= expected.cost * (1 + 1e-6)
        np.testing.assert_allclose(fit.x, expected.x, atol=2e-3)
        assert np.all(fit.x[1:3] >= -1.5) and np.all(fit.x[1:3] <= 1.5)
        np.testing.assert_allclose(np.diag(np.linalg.inv(fit.jac.T @ fit.jac)),
                                   np.diag(np.linalg.inv(expected.jac.T @ expected.jac)),
                                   rtol=1e-3)


def test_bilinear_is_map_coordinates_order_1_constant():
    rng = np.random.default_rng(4)
    window = rng.random((11, 11))
    points = rng.uniform(-1.5, 11.5, (2, 5000))
    points[:, :50] = np.round(points[:, :50])  # on the nodes and on the edges exactly
    points[0, 50:60], points[0, 60:70] = 10.0, 0.0
    expected = ndimage.map_coordinates(window, points, order=1, cval=0.0)
    np.testing.assert_allclose(detection.bilinear(window, points[0], points[1]), expected,
                               atol=1e-14)
    nodes = rng.integers(-2, 13, (2, 500))  # whole pixels: read directly
    np.testing.assert_allclose(detection.bilinear(window, nodes[0], nodes[1]),
                               ndimage.map_coordinates(window, nodes.astype(float), order=1,
                                                       cval=0.0), atol=1e-14)


def test_maximum_filter_is_ndimage_s():
    rng = np.random.default_rng(5)
    image = rng.normal(size=(199, 199))
    image[rng.random(image.shape) < 0.1] = -np.inf
    for size in (3, 4, 5):
        np.testing.assert_array_equal(
            detection.maximum_filter(image, size),
            ndimage.maximum_filter(image, size=size, mode="constant", cval=-np.inf))


def test_bounded_least_squares_ends_on_a_flat_or_bad_problem():
    """A parameter the residuals do not depend on, and residuals that turn NaN away from the
    start: the fit stops (no endless damping) and keeps a finite point."""
    flat = solvers.bounded_least_squares(lambda p: np.array([p[0] - 1.0, 0.0 * p[1]]),
                                         [0.0, 0.0], [-np.inf, -1.0], [np.inf, 1.0])
    assert flat.x[0] == pytest.approx(1.0) and flat.x[1] == 0.0
    nan_away = solvers.bounded_least_squares(
        lambda p: np.array([p[0] - 2.0 if p[0] < 0.5 else np.nan]), [0.0], [-5.0], [5.0])
    assert np.isfinite(nan_away.x).all() and nan_away.x[0] < 0.5
    zero = solvers.bounded_least_squares(lambda p: np.zeros(3), [1.0, 2.0], [-9, -9], [9, 9])
    np.testing.assert_array_equal(zero.x, [1.0, 2.0])
