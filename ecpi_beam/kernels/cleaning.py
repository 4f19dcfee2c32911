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


def fit_shadow_amplitude(data, variance, weights, shadow) -> float:
    """Weighted least-squares amplitude a of data = a * shadow + constant over good pixels.

    The free constant absorbs what the background fit left: the balanced correlation ignores a
    constant, so it must not leak into the source amplitude either.
    """
    use = (np.asarray(weights) > 0) & (np.asarray(variance) > 0)
    if use.sum() < 3:
        return 0.0
    inverse_variance = 1.0 / np.asarray(variance)[use]
    design = np.column_stack([np.asarray(shadow)[use], np.ones(use.sum())])
    normal = design.T @ (design * inverse_variance[:, None])
    try:
        amplitude, _ = np.linalg.solve(normal, design.T @ (np.asarray(data)[use] * inverse_variance))
    except np.linalg.LinAlgError:
        return 0.0
    return float(amplitude)


def _brightest(plan, data, variance, weights, irf_correction, **find):
    sky = irf_correction(imaging.balanced_sky_image(plan, data, variance, weights))
    found = detection.find_sources(sky, max_sources=1, plan=plan, weights=weights, **find)
    return found[0] if found else None


def detect_and_clean(plan, pattern, data, variance, weights, *, snr_threshold, pcode_min, win_dim,
                     irf_correction=imaging.irf_correction("no_correction"), max_sources=20):
    """Detections in a flat-fielded, background-corrected detector image, cleaned one by one."""
    find = dict(snr_threshold=snr_threshold, pcode_min=pcode_min, win_dim=win_dim)
    residual = np.asarray(data, dtype=float).copy()
    positions, models = [], []
    for _ in range(2 * max_sources):  # a residual re-found at a known position costs one pass
        found = _brightest(plan, residual, variance, weights, irf_correction, **find)
        if found is None:
            break
        shadow = source_shadowgram(pattern, found.row, found.col) * (np.asarray(weights) > 0)
        model = fit_shadow_amplitude(residual, variance, weights, shadow) * shadow
        residual -= model
        known = [k for k, (row, col) in enumerate(positions)
                 if np.hypot(row - found.row, col - found.col) < SAME_SOURCE_PIXELS]
        if known:
            models[known[0]] = models[known[0]] + model
        elif len(positions) < max_sources:
            positions.append((found.row, found.col))
            models.append(model)
        else:
            residual += model
            break
    detections = []
    for (row, col), model in zip(positions, models):
        alone = _brightest(plan, residual + model, variance, weights, irf_correction, **find)
        if alone is not None and np.hypot(alone.row - row, alone.col - col) < SAME_SOURCE_PIXELS:
            detections.append(alone)
    detections.sort(key=lambda det: -det.snr)
    return CleanedField(tuple(detections), residual)
