"""Earth occultation fraction, classes and class good time (ICD section 1), and the interval
algebra (kernels/intervals.py) they rest on."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import intervals, occultation


def fibonacci_sphere(n):
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = np.pi * (1.0 + 5**0.5) * k
    r = np.sqrt(1.0 - z * z)
    return np.column_stack([z, r * np.cos(phi), r * np.sin(phi)])  # the spiral axis is LOS X


def random_geometry(n, seed):
    rng = np.random.default_rng(seed)
    qparam = Rotation.random(n, random_state=seed).as_quat()
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius_m = (instrument.EARTH_RADIUS_KM + rng.uniform(300.0, 5000.0, n)) * 1e3
    return qparam, direction * radius_m[:, None]


def brute_force_fraction(qparam, position_m, n_points=200_000):
    """Equal-area points on the sphere, each weighted by the response: hidden / total."""
    points = fibonacci_sphere(n_points)
    response = occultation.field_response(points)
    points, response = points[response > 0], response[response > 0]
    earth, radius = instrument.earth_direction_and_radius(position_m)
    earth_los = np.einsum("nji,nj->ni", instrument.attitude_matrix(qparam), earth)
    hidden = points @ earth_los.T > np.cos(radius)[None, :]
    return response @ hidden / response.sum()


def test_geometric_partial_coding_matches_the_icd_field():
    fully = np.tan(np.radians(instrument.FULLY_CODED_HALF_ANGLE_DEG))
    edge = np.tan(np.radians(instrument.ZERO_RESPONSE_HALF_ANGLE_DEG))
    directions = np.array([[1, 0, 0], [1, 0.99 * fully, 0], [1, 0, 1.01 * fully],
                           [1, 1.01 * edge, 0], [1, 0.5 * edge, 0.5 * edge], [-1, 0, 0]], float)
    pcode = occultation.geometric_partial_coding(directions)
    assert pcode[0] == pytest.approx(1.0) and pcode[1] == pytest.approx(1.0)
    assert 0.99 < pcode[2] < 1.0
    assert pcode[3] == 0.0 and pcode[5] == 0.0
    # shift 225 mm per axis: overlap (270 - 225 + 180) / 360 = 0.625 on each axis
    assert pcode[4] == pytest.approx(0.625**2)


def test_grid_weights_are_normalised_and_cover_the_field():
    grid = occultation.field_of_view_grid(2)
    assert grid.weight.sum() == pytest.approx(1.0)
    assert np.all(grid.weight > 0)
    assert np.allclose(np.linalg.norm(grid.los, axis=1), 1.0)
    assert grid.los[np.argmax(grid.weight), 0] == pytest.approx(1.0)  # on-axis weighs most
    assert occultation.field_of_view_grid(2) is grid  # made once


def test_fraction_matches_brute_force_on_random_geometries():
    qparam, position = random_geometry(60, seed=3)
    fraction = occultation.occultation_fraction(qparam, position)
    expected = brute_force_fraction(qparam, position)
    partial = (expected > 0.02) & (expected < 0.98)
    assert partial.sum() >= 10  # the sample exercises the Earth limb, not only 0 and 1
    assert np.max(np.abs(fraction - expected)) < 0.01


def test_fraction_zero_with_earth_behind_and_one_at_very_low_altitude():
    qparam = np.tile(instrument.quaternion_from_pointing(30.0, 10.0), (2, 1))
    boresight = instrument.radec_to_unit(30.0, 10.0)
    altitude_m = np.array([625e3, 20e3]) + instrument.EARTH_RADIUS_KM * 1e3
    # Earth behind: spacecraft on the boresight side; Earth below: on the opposite side
    behind = occultation.occultation_fraction(qparam[:1], boresight[None] * altitude_m[0])
    filling = occultation.occultation_fraction(qparam[1:], -boresight[None] * altitude_m[1])
    assert behind[0] == 0.0
    assert filling[0] == pytest.approx(1.0)


def test_fraction_for_an_orbit_of_samples_matches_chunked_evaluation():
    # the cost is measured in benchmarks/, not here: a timed test is a flaky test
    qparam, position = random_geometry(5400, seed=4)
    fraction = occultation.occultation_fraction(qparam, position)
    chunked = np.concatenate([occultation.occultation_fraction(qparam[i:i + 1000],
                                                               position[i:i + 1000])
                              for i in range(0, 5400, 1000)])
    assert fraction.shape == (5400,) and np.all((fraction >= 0) & (fraction <= 1))
    np.testing.assert_allclose(fraction, chunked, atol=1e-12)


def test_classes_follow_the_icd_thresholds():
    f = np.array([0.0, 1e-6, 0.5, 0.949, 0.95, 1.0])
    assert list(occultation.occultation_classes(f, 0.0, 0.95)) == [
        "NEO", "PEO", "PEO", "PEO", "TEO", "TEO"]
    assert list(occultation.occultation_classes(f, 0.5, 0.9)) == [
        "NEO", "NEO", "NEO", "TEO", "TEO", "TEO"]
    with pytest.raises(EcpiError, match="peof_min"):
        occultation.occultation_classes(f, 0.9, 0.5)


def test_class_intervals_are_cumulative_and_cut_by_the_base_gti():
    times = np.arange(10.0)
    classes = np.array(["NEO"] * 3 + ["PEO"] * 3 + ["TEO"] * 2 + ["NEO"] * 2)
    base = np.array([[0.0, 100.0]])
    neo = occultation.class_intervals(times, classes, "NEO", base)
    peo = occultation.class_intervals(times, classes, "PEO", base)
    teo = occultation.class_intervals(times, classes, "TEO", base)
    assert np.allclose(neo, [[0.0, 2.5], [7.5, 9.0]])
    assert np.allclose(peo, [[0.0, 5.5], [7.5, 9.0]])
    assert np.allclose(teo, [[0.0, 9.0]])
    assert intervals.duration(neo) < intervals.duration(peo) < intervals.duration(teo)
    cut = occultation.class_intervals(times, classes, "PEO", [[1.0, 8.0]])
    assert np.allclose(cut, [[1.0, 5.5], [7.5, 8.0]])
    with pytest.raises(EcpiError, match="XEO"):
        occultation.class_intervals(times, classes, "XEO", base)


# --- kernels/intervals.py ---------------------------------------------------------------
def brute_mask(a, t):
    a = np.asarray(a)
    return ((t[:, None] >= a[None, :, 0]) & (t[:, None] < a[None, :, 1])).any(axis=1)


def test_intervals_union_merges_sorts_and_drops_empty():
    merged = intervals.union([[5, 6], [0, 2], [1, 3], [3, 4], [7, 7], [9, 8]])
    assert np.array_equal(merged, [[0, 4], [5, 6]])
    assert intervals.union(np.zeros((0, 2))).shape == (0, 2)


def test_intervals_intersect_matches_a_fine_time_grid():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 100, 20001)[:-1] + 0.0025
    for _ in range(20):
        a = np.sort(rng.uniform(0, 100, (rng.integers(1, 8), 2)), axis=1)
        b = np.sort(rng.uniform(0, 100, (rng.integers(1, 8), 2)), axis=1)
        both = intervals.intersect(a, b)
        assert np.array_equal(intervals.mask_times(t, both),
                              brute_mask(a, t) & brute_mask(b, t))
        assert np.all(np.diff(both.ravel()) >= 0)  # sorted and disjoint
    assert intervals.intersect([[0, 1]], np.zeros((0, 2))).shape == (0, 2)


def test_intervals_duration_and_mask_times_edges():
    assert intervals.duration([[0, 2], [1, 3], [10, 11]]) == 4.0
    assert list(intervals.mask_times([0.0, 1.0, 2.0, -1.0], [[0.0, 2.0]])) == [
        True, True, False, False]


def test_intervals_from_boolean_samples_uses_midpoints():
    times = np.array([0.0, 1.0, 2.0, 4.0, 5.0])
    good = np.array([True, True, False, True, True])
    assert np.allclose(intervals.from_boolean_samples(times, good), [[0.0, 1.5], [3.0, 5.0]])
    assert intervals.from_boolean_samples(times, np.zeros(5, bool)).shape == (0, 2)
