"""Detector images: events -> 80 x 80 histograms per band (ICD section 4, ECL-DET-IMA).

Images are indexed [IDET, JDET]. The accumulator helpers (empty_image, add, merge) are the
whole state of the Beam CombineFn that sums chunk images: a plain array, associative and
commutative, so chunks may be combined in any order or grouping.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError

_N_PIXELS = instrument.N_PIX * instrument.N_PIX


def pixel_index(idet, jdet) -> np.ndarray:
    """IDET * 80 + JDET (intp), after checking that both lie in 0..79."""
    idet, jdet = (np.asarray(values) for values in (idet, jdet))
    if jdet.dtype.kind not in "iu":  # e.g. an empty list
        jdet = jdet.astype(np.intp)
    if idet.size and (min(idet.min(), jdet.min()) < 0
                      or max(idet.max(), jdet.max()) >= instrument.N_PIX):
        raise EcpiError(f"IDET and JDET must lie in 0..{instrument.N_PIX - 1}")
    index = idet.astype(np.intp)
    index *= instrument.N_PIX
    index += jdet
    return index


def detector_histogram(idet, jdet, weights=None) -> np.ndarray:
    """(80, 80) counts (int64), or sums of `weights` (float64), per detector pixel."""
    image = np.bincount(pixel_index(idet, jdet), weights=weights, minlength=_N_PIXELS)
    return image.reshape(instrument.N_PIX, instrument.N_PIX)


@dataclass(frozen=True, eq=False)
class KeyedBinning:
    """How (class, band) keys share one histogram: the PI axis cut at every band edge into
    disjoint segments, so that overlapping bands (13-60 and 13-1260) cost one lookup per event;
    a band is the sum of its segments."""

    bands: tuple  # ((lo, hi), ...) inclusive PI bands
    segment_of_pi: np.ndarray  # (n_pi + 2,) segment of PI p at p + 1; first and last: no band
    band_segments: np.ndarray  # (n_bands, n_segments) int64 membership (0/1)


def keyed_binning(bands) -> KeyedBinning:
    """The KeyedBinning of inclusive PI bands."""
    bands = tuple((int(lo), int(hi)) for lo, hi in bands)
    top = max([instrument.N_PI - 1] + [hi for _, hi in bands])
    edges = np.unique([edge for lo, hi in bands for edge in (lo, hi + 1)] + [0, top + 1])
    # segment k covers PI edges[k] .. edges[k + 1] - 1; segment len(edges) - 1: no band
    segment = np.searchsorted(edges, np.arange(top + 1), side="right") - 1
    n_segments = len(edges)
    membership = np.zeros((len(bands), n_segments), dtype=np.int64)
    for b, (lo, hi) in enumerate(bands):
        membership[b, :-1] = (edges[:-1] >= lo) & (edges[:-1] <= hi)
    lookup = np.concatenate([[n_segments - 1], segment, [n_segments - 1]]).astype(np.intp)
    lookup.setflags(write=False)
    membership.setflags(write=False)
    return KeyedBinning(bands, lookup, membership)


def keyed_histograms(keyed: KeyedBinning, idet, jdet, pi, class_masks) -> np.ndarray:
    """(n_classes, n_bands, 80, 80) int64 counts: events with class_masks[c] true and PI in
    band b, per pixel. Classes may overlap (at most 8). One bincount over a combined (class
    membership, PI segment, pixel) index: the cost per event does not depend on the number of
    bands or classes."""
    n_classes, n_segments = len(class_masks), keyed.band_segments.shape[1]
    if n_classes > 8:
        raise ValueError(f"at most 8 classes, got {n_classes}")
    index = pixel_index(idet, jdet)
    pi = np.asarray(pi)
    # PI below 0 or beyond the table is clipped onto the 'no band' ends
    segment = np.take(keyed.segment_of_pi, pi.astype(np.intp) + 1, mode="clip")
    membership = np.zeros(len(index), dtype=np.intp)
    for c, mask in enumerate(class_masks):
        membership[mask] += 1 << c
    segment += membership * n_segments
    index += segment * _N_PIXELS
    counts = np.bincount(index, minlength=(1 << n_classes) * n_segments * _N_PIXELS)
    counts = counts.reshape(1 << n_classes, n_segments, _N_PIXELS)
    codes = np.arange(1 << n_classes)
    out = np.empty((n_classes, len(keyed.bands), _N_PIXELS), dtype=np.int64)
    for c in range(n_classes):
        in_class = counts[(codes >> c) & 1 == 1].sum(axis=0)  # (n_segments, pixels)
        out[c] = keyed.band_segments @ in_class
    return out.reshape(n_classes, len(keyed.bands), instrument.N_PIX, instrument.N_PIX)


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
