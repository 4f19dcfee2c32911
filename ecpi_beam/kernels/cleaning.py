"""Iterative source cleaning (SCIENCE.md, "Ghosts and coding noise"; IBIS/ISGRI, ECPI's IMAG).

A bright source adds correlated side lobes across the whole field. Each source found is
forward-projected through the mask (its exact thin-mask shadowgram), its amplitude fitted to
the detector image, and subtracted before re-imaging; the side lobes go with it, so they are
neither detected as sources nor bias the positions of fainter ones. Each source is finally
re-measured alone: on the residual of all the others plus its own shadowgram.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.kernels import detection, imaging

SAME_SOURCE_PIXELS = 2.0  # a peak this close to a cleaned source is its residual, not a new one


@dataclass(frozen=True)
class CleanedField:
    detections: tuple  # of detection.Detection, brightest first
    residual: np.ndarray  # (80, 80) the detector data with every source's shadowgram removed


def source_shadowgram(pattern, row: float, col: float) -> np.ndarray:
    """Open fraction of each detector pixel towards sky position (row, col) (exact, ICD path)."""
    return instrument.pixel_open_fraction(pattern, instrument.sky_pixel_to_los(row, col))


def fit_shadowgrams(data, variance, weights, shadows, background_components=()):
    """Weighted least-squares amplitudes of data = sum a_k shadow_k + sum b_j component_j.

    The background components (e.g. a constant, the sky-illumination template) are refitted
    with the sources: a bright source's counts biased the background fit made without it, and
    that bias, left in, would image as broad structure. Returns (a, the fitted model).
    """
    use = (np.asarray(weights) > 0) & (np.asarray(variance) > 0)
    columns = [np.asarray(c, dtype=float) for c in (*shadows, *background_components)]
    if use.sum() <= len(columns) or not columns:
        return np.zeros(len(shadows)), np.zeros(np.shape(data))
    sigma = np.sqrt(np.asarray(variance)[use])
    design = np.column_stack([c[use] for c in columns])
    coefficients, *_ = np.linalg.lstsq(design / sigma[:, None], np.asarray(data)[use] / sigma,
                                       rcond=None)
    model = np.zeros(np.shape(data))
    model[use] = design @ coefficients
    return coefficients[:len(shadows)], model


def _near(row, col, positions):
    return any(np.hypot(row - r, col - c) < SAME_SOURCE_PIXELS for r, c in positions)


def _brightest(plan, terms, data, variance, weights, irf_correction, exclude=(), **find):
    """The brightest source in the image of `data`, away from the `exclude` positions."""
    sky = irf_correction(imaging.balanced_sky_image(plan, data, variance, weights, terms=terms))
    found = detection.find_sources(sky, max_sources=1, plan=plan, weights=weights, terms=terms,
                                   exclude=exclude, exclude_radius=SAME_SOURCE_PIXELS, **find)
    return found[0] if found else None


def detect_and_clean(plan, pattern, data, variance, weights, *, snr_threshold, pcode_min, win_dim,
                     irf_correction=imaging.irf_correction("no_correction"), max_sources=20,
                     background_components=()):
    """Detections in a flat-fielded, background-corrected detector image, cleaned one by one.

    background_components: (80, 80) arrays (in the same flat-fielded units as `data`) of the
    background model's terms, refitted jointly with the source shadowgrams.
    """
    find = dict(snr_threshold=snr_threshold, pcode_min=pcode_min, win_dim=win_dim)
    data = np.asarray(data, dtype=float)
    good = np.asarray(weights) > 0
    terms = imaging.balance_terms(plan, weights)  # weights never change while cleaning
    positions, shadows = [], []
    residual, amplitudes = data.copy(), np.zeros(0)
    for _ in range(max_sources + 1):
        # what is left at a cleaned position is the model's limit, not a new source
        found = _brightest(plan, terms, residual, variance, weights, irf_correction, positions,
                           **find)
        if found is None or len(positions) >= max_sources:
            break
        positions.append((found.row, found.col))
        shadows.append(source_shadowgram(pattern, found.row, found.col) * good)
        amplitudes, model = fit_shadowgrams(data, variance, weights, shadows,
                                            background_components)
        residual = np.where(good, data - model, 0.0)
    detections = []
    for (row, col), shadow, amplitude in zip(positions, shadows, amplitudes):
        alone = _brightest(plan, terms, residual + amplitude * shadow, variance, weights,
                           irf_correction, **find)
        if alone is not None and _near(alone.row, alone.col, [(row, col)]):
            detections.append(alone)
    detections.sort(key=lambda det: -det.snr)
    return CleanedField(tuple(detections), residual)
