"""Background correction of detector images (BUBE; SCIENCE.md "Backgrounds"; ICD ECL-DET-UBC).

Each mode is one entry of BACKGROUND_MODES: a function (counts, good, template, context) ->
(model image in counts, coefficients {name: (value, error)}). correct_background wraps it the
same way for every mode:
- corrected = counts - model on good pixels, 0 elsewhere (no flat-fielding here: IMAG divides
  by the pixel efficiency, and the `shape` template already carries it when the caller asks);
- variance = the Poisson variance of the COUNTS (= counts) on good pixels, 0 elsewhere. The
  fitted model is not subtracted from it: it stays the variance of the data that go into the
  balanced correlation.
Models are fitted by Poisson maximum likelihood over good pixels; errors from the Fisher matrix.

The sky-illumination template is the CXB shape: each detector pixel sees the sky through the
open mask elements. It is the projected solid angle (integral of cos(theta) dOmega) of the open
elements seen from the pixel centre, exact per element (view factor of a rectangle parallel to
the plane); it ignores the shield, the pixel extent and the mask thickness.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError

# modes of the seed planned for later stages (ROADMAP stage 4): named in the error message
PLANNED_MODES = ("flat_moretti", "shape_moretti", "shape_moretti_earth",
                 "shape_moretti_earth_ref", "shape_moretti_smart")


@dataclass(frozen=True, eq=False)
class BackgroundResult:
    corrected: np.ndarray  # (80, 80) counts - model, 0 on bad pixels
    variance: np.ndarray  # (80, 80) Poisson variance of the counts, 0 on bad pixels
    model: np.ndarray  # (80, 80) fitted background in counts, 0 on bad pixels
    coefficients: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    mode: str = ""


# ------------------------------------------------------------------------------------------
# Sky-illumination template
# ------------------------------------------------------------------------------------------
def rectangle_corner_projected_solid_angle(x, y, height):
    """Integral of cos(theta) dOmega over the rectangle [0, x] x [0, y] at `height` above the
    point (signed: odd in x and in y), = pi x the view factor of a parallel rectangle."""
    a, b = np.asarray(x, dtype=float) / height, np.asarray(y, dtype=float) / height
    root_a, root_b = np.sqrt(1.0 + a * a), np.sqrt(1.0 + b * b)
    return 0.5 * (a / root_a * np.arctan(b / root_a) + b / root_b * np.arctan(a / root_b))


def rectangle_corner_solid_angle(x, y, height):
    """Solid angle of the rectangle [0, x] x [0, y] at `height` above the point (signed)."""
    a, b = np.asarray(x, dtype=float) / height, np.asarray(y, dtype=float) / height
    return np.arctan(a * b / np.sqrt(1.0 + a * a + b * b))


@functools.lru_cache(maxsize=4)
def _template_from_pattern_bytes(pattern_bytes: bytes) -> np.ndarray:
    pattern = np.frombuffer(pattern_bytes, dtype=np.uint8).reshape(instrument.N_MASK,
                                                                     instrument.N_MASK)
    padded = np.pad((pattern > 0).astype(float), 1)
    # a sum over open rectangles is a signed sum over element corners: +1/-1 per open corner
    corner_weight = padded[:-1, :-1] - padded[:-1, 1:] - padded[1:, :-1] + padded[1:, 1:]
    edges = (np.arange(instrument.N_MASK + 1) - instrument.N_MASK / 2.0) * instrument.MASK_PITCH_MM
    centres = instrument.pixel_centre_mm(np.arange(instrument.N_PIX))
    to_edge = edges[None, :] - centres[:, None]  # (80 pixels, 47 edges), same along z and y
    template = np.empty((instrument.N_PIX, instrument.N_PIX))
    for i in range(instrument.N_PIX):  # one detector row at a time bounds memory to ~2 MB
        corner = rectangle_corner_projected_solid_angle(
            to_edge[i][None, :, None, None], to_edge[None, None, :, :], instrument.MASK_HEIGHT_MM)
        # corner[0, a, j, b]: z edge a, pixel column j, y edge b
        template[i] = np.einsum("ab,ajb->j", corner_weight, corner[0])
    template.setflags(write=False)
    return template


def sky_illumination_template(pattern, efficiency=None) -> np.ndarray:
    """(80, 80) projected solid angle (sr) of the open mask seen from each pixel centre,
    times the pixel efficiency if given. Cached per pattern."""
    pattern = np.asarray(pattern)
    if pattern.shape != (instrument.N_MASK, instrument.N_MASK):
        raise EcpiError(f"mask pattern must be {instrument.N_MASK} x {instrument.N_MASK}, "
                        f"got {pattern.shape}")
    template = _template_from_pattern_bytes((pattern > 0).astype(np.uint8).tobytes())
    return template.copy() if efficiency is None else template * np.asarray(efficiency, float)


# ------------------------------------------------------------------------------------------
# Poisson fit of a linear model
# ------------------------------------------------------------------------------------------
def fit_poisson_linear(counts, components, max_iterations=100):
    """Poisson ML fit of counts ~ sum_k beta_k components[k] (non-negative model).

    Fisher scoring with step halving to keep the model positive; returns (beta, covariance),
    the covariance the inverse Fisher matrix at the solution.
    """
    n = np.asarray(counts, dtype=float)
    design = np.column_stack([np.asarray(c, dtype=float) for c in components])
    if n.sum() <= 0:
        return np.zeros(design.shape[1]), np.full((design.shape[1],) * 2, np.nan)
    beta = np.linalg.lstsq(design, n, rcond=None)[0]
    model = design @ beta
    if np.any(model <= 0):  # start from a scaled flat-ish model that is positive everywhere
        beta = np.zeros(design.shape[1])
        beta[0] = n.sum() / design[:, 0].sum()
        model = design @ beta
    for _ in range(max_iterations):
        safe = np.maximum(model, 1e-12)
        score = design.T @ (n / safe - 1.0)
        fisher = design.T @ (design / safe[:, None])
        step = np.linalg.solve(fisher, score)
        scale = 1.0
        while np.any(design @ (beta + scale * step) <= 0) and scale > 1e-6:
            scale *= 0.5
        beta = beta + scale * step
        model = design @ beta
        if np.all(np.abs(scale * step) <= 1e-10 * (np.abs(beta) + 1e-12)):
            break
    fisher = design.T @ (design / np.maximum(model, 1e-12)[:, None])
    return beta, np.linalg.inv(fisher)


def _fit_components(counts, good, named_components):
    names = list(named_components)
    beta, cov = fit_poisson_linear(counts[good], [named_components[k][good] for k in names])
    model = np.zeros(counts.shape)
    model[good] = sum(b * named_components[k][good] for b, k in zip(beta, names))
    errors = np.sqrt(np.diag(cov))
    return model, {k: (float(b), float(e)) for k, b, e in zip(names, beta, errors)}


# ------------------------------------------------------------------------------------------
# Modes
# ------------------------------------------------------------------------------------------
def _flat_field(counts, context):
    """The pixel efficiency map (CALDB EFFIC) from the context; every detected count, sky or
    particle, scales with it, so a "flat" background is flat after flat-fielding."""
    efficiency = context.get("efficiency")
    return np.ones(counts.shape) if efficiency is None else np.asarray(efficiency, dtype=float)


def no_correction(counts, good, template, context):
    """No background model: the image is used as it is."""
    return np.zeros(counts.shape), {}


def flat(counts, good, template, context):
    """counts ~ c x efficiency: c = counts per unit efficiency, error ~ sqrt(c / n_good)."""
    return _fit_components(counts, good, {"constant": _flat_field(counts, context)})


def shape(counts, good, template, context):
    """counts ~ a T + c, T the sky-illumination template normalised to mean 1 on good pixels,
    so a is the mean counts per pixel from the sky and c the flat (particle) part; T carries
    the pixel efficiencies when it was made with them, and so does the flat part."""
    if template is None:
        pattern = (context or {}).get("mask_pattern")
        if pattern is None:
            raise EcpiError("[bube] bkg_cor_mod = 'shape' needs the sky-illumination template "
                            "(or a mask pattern to compute it)")
        template = sky_illumination_template(pattern)
    template = np.asarray(template, dtype=float)
    normalised = template / template[good].mean()
    return _fit_components(counts, good, {"sky_shape": normalised,
                                          "constant": _flat_field(counts, context)})


BackgroundMode = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", Mapping],
                          tuple[np.ndarray, dict]]
BACKGROUND_MODES: dict[str, BackgroundMode] = {
    "no_correction": no_correction,
    "flat": flat,
    "shape": shape,
}


def available_modes() -> tuple[str, ...]:
    return tuple(BACKGROUND_MODES)


def correct_background(mode: str, counts, good, template=None,
                       context: Mapping | None = None) -> BackgroundResult:
    """Fit background `mode` to an (80, 80) counts image over the good pixels and remove it.

    good: (80, 80) bool mask or weights (> 0 = used); template: (80, 80) sky-illumination
    template for `shape`; context: {"efficiency": (80, 80) flat field, ...} and the extra
    inputs of later modes (Earth template, ...).
    """
    if mode not in BACKGROUND_MODES:
        what = "is not available yet" if mode in PLANNED_MODES else "is not a background mode"
        raise EcpiError(f"[bube] bkg_cor_mod = {mode!r} {what}; available: "
                        f"{', '.join(available_modes())}")
    counts = np.asarray(counts, dtype=float)
    good = np.asarray(good) > 0
    if counts.shape != good.shape:
        raise EcpiError(f"counts {counts.shape} and good-pixel mask {good.shape} differ in shape")
    if not good.any():
        zeros = np.zeros(counts.shape)
        return BackgroundResult(zeros, zeros.copy(), zeros.copy(), {}, mode)
    model, coefficients = BACKGROUND_MODES[mode](counts, good, template, context or {})
    corrected = np.where(good, counts - model, 0.0)
    variance = np.where(good, counts, 0.0)
    return BackgroundResult(corrected, variance, np.where(good, model, 0.0), coefficients, mode)
