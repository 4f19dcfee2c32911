"""The fast paths of the event path give what the plain formulas give."""
import numpy as np
import pytest

from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.io.events import EVENT_DTYPE
from ecpi_beam.kernels import binning, intervals
from ecpi_beam.kernels.calibrate import calibrate_events


def test_keyed_histograms_equal_one_histogram_per_band_and_class():
    rng = np.random.default_rng(3)
    n = 20_000
    idet, jdet = rng.integers(0, 80, n), rng.integers(0, 80, n)
    pi = rng.integers(-5, 1600, n).astype(np.int16)  # beyond the PI scale on both ends
    bands = ((13, 60), (61, 140), (13, 1260), (0, 12), (1400, 1499))  # overlapping bands
    classes = [rng.random(n) < 0.6, rng.random(n) < 0.3, np.zeros(n, bool)]  # overlapping
    images = binning.keyed_histograms(binning.keyed_binning(bands), idet, jdet, pi, classes)
    assert images.shape == (3, 5, 80, 80) and images.dtype == np.int64
    for c, in_class in enumerate(classes):
        for b, band in enumerate(bands):
            selected = in_class & binning.band_mask(pi, band)
            expected = binning.detector_histogram(idet[selected], jdet[selected])
            np.testing.assert_array_equal(images[c, b], expected)
    assert images[2].sum() == 0


def test_keyed_histograms_check_pixels():
    keyed = binning.keyed_binning([(13, 60)])
    with pytest.raises(Exception, match="IDET"):
        binning.keyed_histograms(keyed, [80], [0], [20], [np.ones(1, bool)])


@pytest.mark.parametrize("sort", [True, False])
def test_mask_times_sorted_and_unsorted_agree_with_the_definition(sort):
    rng = np.random.default_rng(4)
    times = rng.uniform(0.0, 100.0, 5000)
    times[::7] = np.round(times[::7])  # times on interval edges
    if sort:
        times.sort()
    gti = np.array([[10.0, 20.0], [20.0, 21.0], [50.0, 50.0], [70.0, 99.0], [-5.0, 1.0]])
    expected = np.zeros(len(times), bool)
    for start, stop in gti:
        expected |= (times >= start) & (times < stop)
    np.testing.assert_array_equal(intervals.mask_times(times, gti), expected)


def test_calibration_of_a_packed_chunk_equals_the_column_by_column_copy():
    rng = np.random.default_rng(5)
    n = 5000
    events = np.zeros(n, EVENT_DTYPE)
    events["TIME"] = np.sort(rng.uniform(0, 10, n))
    events["IDET"], events["JDET"] = rng.integers(0, 80, n), rng.integers(0, 80, n)
    events["PHA"], events["FLAG"] = rng.integers(0, 4096, n), rng.integers(0, 4, n)
    pixcal = Caldb.open(default_caldb_dir()).pixel_calibration()
    calibrated, drops = calibrate_events(events, pixcal, [[1.0, 9.0]])
    # the same chunk with its columns in another order takes the column-by-column copy
    reordered = np.zeros(n, [(name, EVENT_DTYPE[name]) for name in reversed(EVENT_DTYPE.names)])
    for name in EVENT_DTYPE.names:
        reordered[name] = events[name]
    other, other_drops = calibrate_events(reordered, pixcal, [[1.0, 9.0]])
    assert drops == other_drops and sum(drops.values()) + len(calibrated) == n
    np.testing.assert_array_equal(calibrated, other)
