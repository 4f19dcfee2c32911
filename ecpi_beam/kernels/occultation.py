"""Earth occultation of the field of view (ICD section 1, "Earth occultation classes").

f(t) is the fraction of the field of view hidden by the Earth, the field weighted by the
on-axis-normalised response: geometric partial coding (the fraction of the detector plane that
sees the direction through the 540 mm mask plane) times cos(theta) (projected area), times the
solid angle. It is evaluated on a subsample of the sky grid (instrument.sky_grid_los()).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import intervals

OCCULTATION_RANK = {occ: rank for rank, occ in enumerate(instrument.OCCULTATION_TYPES)}
_DETECTOR_HALF_WIDTH_MM = instrument.N_PIX * instrument.PIXEL_PITCH_MM / 2.0  # 180 mm
_MASK_HALF_WIDTH_MM = instrument.MASK_WIDTH_MM / 2.0  # 270 mm
_BLOCK_ELEMENTS = 500_000  # samples x grid points per block: bounds memory, stays in cache


def geometric_partial_coding(direction_los) -> np.ndarray:
    """Fraction of the detector plane that sees direction u through the mask plane (0 to 1).

    Per axis, the detector strip [-180, 180] mm shifted by 460 tan(theta_axis) must land in the
    mask plane [-270, 270] mm; the fraction is the product of the two axis overlaps.
    """
    u = np.asarray(direction_los, dtype=float)
    ahead = u[..., 0] > 0
    safe_x = np.where(ahead, u[..., 0], 1.0)
    fraction = np.where(ahead, 1.0, 0.0)
    for axis in (1, 2):
        shift = instrument.MASK_HEIGHT_MM * u[..., axis] / safe_x
        overlap = (np.minimum(_DETECTOR_HALF_WIDTH_MM, _MASK_HALF_WIDTH_MM - shift)
                   - np.maximum(-_DETECTOR_HALF_WIDTH_MM, -_MASK_HALF_WIDTH_MM - shift))
        fraction = fraction * np.clip(overlap / (2 * _DETECTOR_HALF_WIDTH_MM), 0.0, 1.0)
    return fraction


def field_response(direction_los) -> np.ndarray:
    """On-axis-normalised response per unit solid angle: partial coding x cos(theta)."""
    u = np.asarray(direction_los, dtype=float)
    cos_theta = u[..., 0] / np.linalg.norm(u, axis=-1)
    return geometric_partial_coding(u) * np.clip(cos_theta, 0.0, None)


@dataclass(frozen=True, eq=False)
class FieldOfViewGrid:
    """Sky directions covering the field and their weights (response x solid angle, sum 1)."""

    los: np.ndarray  # (n, 3) LOS unit vectors, only directions with non-zero response
    weight: np.ndarray  # (n,)
    step: int


@functools.lru_cache(maxsize=8)
def field_of_view_grid(step: int = 2) -> FieldOfViewGrid:
    """Every `step`-th sky-grid pixel per axis (the on-axis pixel included), made once."""
    if int(step) < 1:
        raise EcpiError(f"field-of-view grid step must be a positive integer, got {step}")
    step = int(step)
    first = instrument.SKY_CENTRE % step
    los = instrument.sky_grid_los()[first::step, first::step].reshape(-1, 3)
    solid_angle = instrument.sky_pixel_solid_angle()[first::step, first::step].reshape(-1)
    weight = field_response(los) * solid_angle
    keep = weight > 0
    los, weight = los[keep], weight[keep] / weight[keep].sum()
    los.setflags(write=False)
    weight.setflags(write=False)
    return FieldOfViewGrid(los=los, weight=weight, step=step)


def occultation_fraction(qparam, position_m, grid: FieldOfViewGrid | None = None) -> np.ndarray:
    """Weighted fraction f (n,) of the field hidden by the Earth at n attitude/position samples."""
    grid = field_of_view_grid() if grid is None else grid
    qparam = np.asarray(qparam, dtype=float).reshape(-1, 4)
    position_m = np.asarray(position_m, dtype=float).reshape(-1, 3)
    if len(qparam) != len(position_m):
        raise ValueError("qparam and position_m must have the same number of samples")
    earth_icrs, earth_radius = instrument.earth_direction_and_radius(position_m)
    # v_icrs = R v_los, so the Earth direction in LOS is R^T e_icrs
    earth_los = np.einsum("nji,nj->ni", instrument.attitude_matrix(qparam), earth_icrs)
    cos_radius = np.cos(earth_radius)
    # float32 halves the memory traffic (1e-7 in cos is far below the grid resolution); plain
    # broadcasting and einsum rather than BLAS, whose threads thrash for a K = 3 product
    grid_x, grid_y, grid_z = grid.los.T.astype(np.float32)
    weight = grid.weight.astype(np.float32)
    earth_los = earth_los.astype(np.float32)
    cos_radius = cos_radius.astype(np.float32)
    fraction = np.empty(len(qparam))
    block = max(1, _BLOCK_ELEMENTS // len(weight))
    for start in range(0, len(qparam), block):
        earth = earth_los[start:start + block]
        cos_to_earth = earth[:, 0:1] * grid_x
        cos_to_earth += earth[:, 1:2] * grid_y
        cos_to_earth += earth[:, 2:3] * grid_z
        hidden = cos_to_earth > cos_radius[start:start + block, None]
        fraction[start:start + block] = np.einsum("bg,g->b", hidden, weight)
    return np.clip(fraction, 0.0, 1.0)


def occultation_classes(fraction, peof_min=instrument.PEOF_MIN_DEFAULT,
                        peof_max=instrument.PEOF_MAX_DEFAULT) -> np.ndarray:
    """'NEO' (f <= peof_min), 'PEO' (in between) or 'TEO' (f >= peof_max) per sample (ICD)."""
    if not 0.0 <= peof_min < peof_max <= 1.0:
        raise EcpiError(f"[bube] need 0 <= peof_min < peof_max <= 1, got peof_min = {peof_min}, "
                        f"peof_max = {peof_max}")
    f = np.asarray(fraction, dtype=float)
    rank = np.where(f <= peof_min, 0, np.where(f >= peof_max, 2, 1))
    return np.asarray(instrument.OCCULTATION_TYPES)[rank]


def class_intervals(times, classes, occ_type, base_gti) -> np.ndarray:
    """Good time (n, 2) of occultation type occ_type: samples in that class or a lower one
    (NEO = NEO; PEO = NEO + PEO; TEO = all), intersected with base_gti."""
    if occ_type not in OCCULTATION_RANK:
        raise EcpiError(f"occultation type {occ_type!r} is not one of "
                        f"{', '.join(instrument.OCCULTATION_TYPES)}")
    classes = np.asarray(classes)
    in_type = np.isin(classes, instrument.OCCULTATION_TYPES[:OCCULTATION_RANK[occ_type] + 1])
    return intervals.intersect(intervals.from_boolean_samples(times, in_type), base_gti)
