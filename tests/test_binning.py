"""Detector images and their accumulator (ICD section 4, ECL-DET-IMA)."""
import functools

import numpy as np
import pytest

from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import binning


def test_histogram_counts_each_event_in_its_pixel():
    idet = np.array([0, 0, 79, 5, 5, 5], dtype=np.uint8)
    jdet = np.array([0, 1, 79, 7, 7, 7], dtype=np.uint8)
    image = binning.detector_histogram(idet, jdet)
    assert image.shape == (80, 80) and image.dtype == np.int64
    assert image[0, 0] == 1 and image[0, 1] == 1 and image[79, 79] == 1 and image[5, 7] == 3
    assert image.sum() == 6
    weighted = binning.detector_histogram(idet, jdet, weights=np.full(6, 0.5))
    assert weighted[5, 7] == pytest.approx(1.5) and weighted.dtype == np.float64


def test_histogram_rejects_out_of_range_pixels_and_accepts_no_events():
    with pytest.raises(EcpiError, match="IDET"):
        binning.detector_histogram([80], [0])
    assert binning.detector_histogram([], []).sum() == 0


def test_band_mask_is_inclusive():
    pi = np.array([12, 13, 60, 61])
    assert list(binning.band_mask(pi, (13, 60))) == [False, True, True, False]


def test_accumulator_is_associative_and_commutative():
    rng = np.random.default_rng(0)
    images = [binning.detector_histogram(rng.integers(0, 80, 100), rng.integers(0, 80, 100))
              for _ in range(12)]
    total = functools.reduce(binning.add, images, binning.empty_image())
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(len(images))
        cuts = np.sort(np.random.default_rng(seed + 10).choice(np.arange(1, 12), 3, replace=False))
        partial = [functools.reduce(binning.add, [images[k] for k in part], binning.empty_image())
                   for part in np.split(order, cuts)]
        assert np.array_equal(binning.merge(partial), total)
        assert np.array_equal(binning.merge(partial[::-1]), total)
    assert np.array_equal(binning.merge([]), binning.empty_image())
    assert total.sum() == 1200


def test_add_does_not_modify_its_inputs():
    accumulator = binning.empty_image()
    image = np.ones((80, 80), dtype=np.int64)
    binning.add(accumulator, image)
    assert accumulator.sum() == 0 and image.sum() == 6400
