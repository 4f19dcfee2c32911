"""Detector images: events -> 80 x 80 histograms per band (ICD section 4, ECL-DET-IMA).

Images are indexed [IDET, JDET]. The accumulator helpers (empty_image, add, merge) are the
whole state of the Beam CombineFn that sums chunk images: a plain array, associative and
commutative, so chunks may be combined in any order or grouping.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError

_N_PIXELS = instrument.N_PIX * instrument.N_PIX


def detector_histogram(idet, jdet, weights=None) -> np.ndarray:
    """(80, 80) counts (int64), or sums of `weights` (float64), per detector pixel."""
    idet = np.asarray(idet, dtype=np.intp)
    jdet = np.asarray(jdet, dtype=np.intp)
    if idet.size and (min(idet.min(), jdet.min()) < 0
                      or max(idet.max(), jdet.max()) >= instrument.N_PIX):
        raise EcpiError(f"IDET and JDET must lie in 0..{instrument.N_PIX - 1}")
    image = np.bincount(idet * instrument.N_PIX + jdet, weights=weights, minlength=_N_PIXELS)
    return image.reshape(instrument.N_PIX, instrument.N_PIX)


def band_mask(pi, band) -> np.ndarray:
    """True for events whose PI lies in the inclusive band (lo, hi) (ICD default bands)."""
    lo, hi = band
    pi = np.asarray(pi)
    return (pi >= lo) & (pi <= hi)


def empty_image(dtype=np.int64) -> np.ndarray:
    """The identity of `add`: an 80 x 80 image of zeros."""
    return np.zeros((instrument.N_PIX, instrument.N_PIX), dtype=dtype)


def add(accumulator: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Sum of an accumulated image and one more image (a new array; inputs are not modified)."""
    return np.add(accumulator, image)


def merge(accumulators: Iterable[np.ndarray]) -> np.ndarray:
    """Sum of accumulated images; the empty image when there are none."""
    total = empty_image()
    for accumulator in accumulators:
        total = add(total, accumulator)
    return total
