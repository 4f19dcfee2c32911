"""Background correction of detector images (BUBE; docs/science.md "Backgrounds"; ICD ECL-DET-UBC).

Each mode is one entry of BACKGROUND_MODES: a function (counts, good, template, context) ->
ModelFit (model image in counts, coefficients {name: (value, error)}, predictions, the image of
each term). docs/background.md gives each mode's formula. correct_background wraps it the same
way for every mode:
- corrected = counts - model on good pixels, 0 elsewhere (no flat-fielding here: IMAG divides
  by the pixel efficiency, and the `shape` template already carries it when the caller asks);
- variance = the Poisson variance of the COUNTS (= counts) on good pixels, 0 elsewhere. The
  fitted model is not subtracted from it: it stays the variance of the data that go into the
  balanced correlation.
Models are fitted by Poisson maximum likelihood over good pixels, every term non-negative;
errors from the Fisher matrix; the fit statistic is the Cash C-statistic with its dof.

The sky-illumination template is the CXB shape: each detector pixel sees the sky through the
open mask elements. It is the projected solid angle (integral of cos(theta) dOmega) of the open
elements seen from the pixel centre, exact per element (view factor of a rectangle parallel to
the plane); it ignores the shield, the pixel extent and the mask thickness.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import cleaning, imaging, solvers

@dataclass(frozen=True, eq=False)
class BackgroundResult:
    corrected: np.ndarray  # (80, 80) counts - model, 0 on bad pixels
    variance: np.ndarray  # (80, 80) Poisson variance of the counts, 0 on bad pixels
    model: np.ndarray  # (80, 80) fitted background in counts, 0 on bad pixels
    coefficients: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    mode: str = ""
    predictions: Mapping[str, float] = field(default_factory=dict)  # physics' value per term
    statistic: Mapping[str, float] = field(default_factory=dict)  # cstat, chi2, dof
    terms: Mapping[str, np.ndarray] = field(default_factory=dict)  # each term's counts image
    extras: Mapping[str, tuple] = field(default_factory=dict)  # mode-specific header cards


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
# Poisson fit of a linear model with non-negative terms
# ------------------------------------------------------------------------------------------
def _log_likelihood(n, model):
    """Poisson log-likelihood up to a constant; -inf if a pixel with counts has no model."""
    if np.any((model <= 0) & (n > 0)):
        return -np.inf
    positive = model > 0
    return float(np.sum(n[positive] * np.log(model[positive])) - model.sum())


def fit_poisson_linear(counts, components, offset=None, max_iterations=200):
    """Poisson ML fit of counts ~ offset + sum_k beta_k components[k], every beta_k >= 0.

    The terms are physical (counts from the sky, the Earth, the particles), so a negative
    coefficient is a model failure, not a measurement: the fit is constrained (projected
    Newton-Fisher scoring with an active set: a coefficient at 0 whose score points below 0
    stays there) and backtracks until the likelihood rises. Returns (beta, covariance), the
    covariance the inverse Fisher matrix at the solution (NaN for an all-zero component).
    """
    n = np.asarray(counts, dtype=float)
    design = np.column_stack([np.asarray(c, dtype=float) for c in components])
    offset = np.zeros(n.shape) if offset is None else np.asarray(offset, dtype=float)
    n_terms = design.shape[1]
    usable = np.any(design > 0, axis=0)
    covariance = np.full((n_terms, n_terms), np.nan)
    beta = np.zeros(n_terms)
    if n.sum() <= 0 or not usable.any():
        return beta, covariance
    sigma = np.sqrt(np.maximum(n, 1.0))
    beta[usable] = solvers.nnls(design[:, usable] / sigma[:, None], (n - offset) / sigma)[0]
    # a small positive start for every term keeps the model positive where counts are
    beta[usable] += 1e-3 * max(n.mean(), 1e-3) / design[:, usable].mean(axis=0)
    likelihood = _log_likelihood(n, offset + design @ beta)
    for _ in range(max_iterations):
        model = np.maximum(offset + design @ beta, 1e-12)
        score = design.T @ (n / model - 1.0)
        fisher = design.T @ (design / model[:, None])
        free = usable & ~((beta <= 0) & (score <= 0))
        if not free.any():
            break
        step = np.zeros(n_terms)
        sub = np.ix_(free, free)
        step[free] = np.linalg.lstsq(fisher[sub], score[free], rcond=None)[0]
        shrinking = free & (step < 0) & (beta > 0)
        to_bound = float(np.min(beta[shrinking] / -step[shrinking])) if shrinking.any() else 1.0
        scale = max(min(1.0, to_bound), 1e-12)
        while True:
            candidate = np.maximum(beta + scale * step, 0.0)
            new_likelihood = _log_likelihood(n, offset + design @ candidate)
            if new_likelihood >= likelihood - 1e-12 * abs(likelihood) or scale < 1e-12:
                break
            scale *= 0.5
        change = np.abs(candidate - beta)
        beta, improvement = candidate, new_likelihood - likelihood
        likelihood = max(likelihood, new_likelihood)
        if to_bound < 1.0:  # a term reached 0: the next step decides whether it stays there
            continue
        if np.all(change <= 1e-10 * (np.abs(beta) + 1e-30)) or 0 <= improvement < 1e-10:
            break
    model = np.maximum(offset + design @ beta, 1e-12)
    fisher = design[:, usable].T @ (design[:, usable] / model[:, None])
    covariance[np.ix_(usable, usable)] = np.linalg.pinv(fisher)
    return beta, covariance


def fit_statistics(counts, model, n_free: int) -> dict:
    """Cash C-statistic (the Poisson deviance, Cash 1979), Pearson chi2 and their dof."""
    n, m = np.asarray(counts, float), np.maximum(np.asarray(model, float), 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(n > 0, n * np.log(n / m), 0.0)
    return {"cstat": float(2.0 * np.sum(m - n + log_term)),
            "chi2": float(np.sum((n - m) ** 2 / m)),
            "dof": int(n.size - n_free)}


@dataclass(frozen=True, eq=False)
class ModelFit:
    """What a mode returns: the model and its terms, each coefficient with error and, where
    physics predicts it, its prediction in the same units."""

    model: np.ndarray  # (80, 80) counts on good pixels
    coefficients: Mapping[str, tuple[float, float]]
    predictions: Mapping[str, float] = field(default_factory=dict)
    terms: Mapping[str, np.ndarray] = field(default_factory=dict)  # term -> its counts image
    n_free: int = 0
    extras: Mapping[str, float] = field(default_factory=dict)  # mode-specific header numbers


@dataclass(frozen=True)
class Term:
    """One model term: a component image and how its coefficient is reported.

    `per_total`: the coefficient is the term's total counts on good pixels (its component is
    the predicted counts image, so its prediction is that total); otherwise the coefficient is
    the component's multiplier (counts per unit of the component). `fixed`: not fitted, held
    at its prediction.
    """

    component: np.ndarray
    per_total: bool = False
    fixed: bool = False


def fit_terms(counts, good, terms: Mapping[str, Term]) -> ModelFit:
    """Poisson fit of the free terms, the fixed ones held at their predictions."""
    names = list(terms)
    pixels = {k: np.asarray(terms[k].component, dtype=float)[good] for k in names}
    free = [k for k in names if not terms[k].fixed]
    offset = sum((pixels[k] for k in names if terms[k].fixed), np.zeros(int(good.sum())))
    if free:
        beta, covariance = fit_poisson_linear(counts[good], [pixels[k] for k in free], offset)
    else:
        beta, covariance = np.zeros(0), np.zeros((0, 0))
    scale = dict(zip(free, beta))
    error = dict(zip(free, np.sqrt(np.diag(covariance))))
    coefficients, predictions, images = {}, {}, {}
    for k in names:
        multiplier = 1.0 if terms[k].fixed else float(scale[k])
        images[k] = np.zeros(counts.shape)
        images[k][good] = multiplier * pixels[k]
        unit = float(pixels[k].sum()) if terms[k].per_total else 1.0
        coefficients[k] = (multiplier * unit, 0.0 if terms[k].fixed else float(error[k]) * unit)
        if terms[k].per_total:
            predictions[k] = unit
    model = sum(images.values(), np.zeros(counts.shape))
    return ModelFit(model, coefficients, predictions, images, n_free=len(free))


# ------------------------------------------------------------------------------------------
# Modes
# ------------------------------------------------------------------------------------------
def _flat_field(counts, context):
    """The pixel efficiency map (CALDB EFFIC) from the context; every detected count, sky or
    particle, scales with it, so a "flat" background is flat after flat-fielding."""
    efficiency = context.get("efficiency")
    return np.ones(counts.shape) if efficiency is None else np.asarray(efficiency, dtype=float)


def _predicted(context, name):
    """A predicted counts image of the physics context (see kernels/earth.py)."""
    image = context.get(name)
    if image is None:
        raise EcpiError(f"[bube] this bkg_cor_mod needs the predicted {name.replace('_', ' ')} "
                        f"image (CALDB response, attitude and orbit of the key)")
    return np.asarray(image, dtype=float)


def no_correction(counts, good, template, context):
    """No background model: the image is used as it is."""
    return ModelFit(np.zeros(counts.shape), {})


def flat(counts, good, template, context):
    """counts ~ c x efficiency: c = counts per unit efficiency, error ~ sqrt(c / n_good)."""
    return fit_terms(counts, good, {"constant": Term(_flat_field(counts, context))})


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
    return fit_terms(counts, good, {"sky_shape": Term(normalised),
                                    "constant": Term(_flat_field(counts, context))})


def flat_moretti(counts, good, template, context):
    """counts ~ P_cxb + c x efficiency: the Earth-blind CXB at its Moretti prediction."""
    return fit_terms(counts, good, {
        "cxb": Term(_predicted(context, "cxb_unocculted"), per_total=True, fixed=True),
        "constant": Term(_flat_field(counts, context))})


def shape_moretti(counts, good, template, context):
    """counts ~ a P_cxb + c x efficiency: the Earth-blind CXB scaled by a fitted factor."""
    return fit_terms(counts, good, {
        "cxb": Term(_predicted(context, "cxb_unocculted"), per_total=True),
        "constant": Term(_flat_field(counts, context))})


def _earth_terms(counts, context, fit_earth: bool):
    return {"cxb": Term(_predicted(context, "cxb_visible"), per_total=True),
            "earth": Term(_predicted(context, "earth_emission"), per_total=True,
                          fixed=not fit_earth),
            "constant": Term(_flat_field(counts, context))}


def shape_moretti_earth(counts, good, template, context):
    """counts ~ a P_cxb,visible + P_earth + c x efficiency: the CXB from the directions the
    Earth leaves visible, scaled; the Earth's own emission at its Ajello prediction."""
    return fit_terms(counts, good, _earth_terms(counts, context, fit_earth=False))


def shape_moretti_earth_ref(counts, good, template, context):
    """counts ~ a P_cxb,visible + e P_earth + c x efficiency, all three fitted jointly."""
    return fit_terms(counts, good, _earth_terms(counts, context, fit_earth=True))


# shape_moretti_smart: at most this many rounds of (fit, find sources); the source list of a
# field is usually stable after the second
SMART_MAX_ROUNDS = 4
SMART_SAME_SOURCE_PIXELS = 1.0
SMART_DETECTION_DEFAULTS = {"snr_threshold": 7.0, "pcode_min": 0.1, "win_dim": 5.0}


def _same_sources(first, second) -> bool:
    if len(first) != len(second):
        return False
    return all(min(np.hypot(r - r2, c - c2) for r2, c2 in second) <= SMART_SAME_SOURCE_PIXELS
               for r, c in first)


def shape_moretti_smart(counts, good, template, context):
    """The earth_ref model fitted jointly with the shadowgrams of the sources IMAG finds in its
    residual, iterated until the source list is stable (kernels/cleaning.py finds them)."""
    pattern = context.get("mask_pattern")
    if pattern is None:
        raise EcpiError("[bube] bkg_cor_mod = 'shape_moretti_smart' needs the mask pattern")
    efficiency = _flat_field(counts, context)
    background_terms = _earth_terms(counts, context, fit_earth=True)
    plan = context.get("correlation_plan") or imaging.make_correlation_plan(
        instrument.resample_mask(pattern))
    find = dict(context.get("detection") or SMART_DETECTION_DEFAULTS)
    weights = (good & (efficiency > 0)).astype(float)
    divisor = np.where(weights > 0, efficiency, 1.0)
    flat_terms = [np.where(weights > 0, t.component / divisor, 0.0)
                  for t in background_terms.values()]
    sources, fit = [], fit_terms(counts, good, background_terms)
    for rounds in range(1, SMART_MAX_ROUNDS + 1):
        corrected = np.where(good, counts - fit.model, 0.0)
        cleaned = cleaning.detect_and_clean(plan, pattern, corrected / divisor * weights,
                                            counts / divisor**2 * weights, weights,
                                            background_components=flat_terms, **find)
        found = [(d.row, d.col) for d in cleaned.detections]
        if _same_sources(found, sources):
            break
        sources = found
        shadows = {f"source_{k}": Term(cleaning.source_shadowgram(pattern, r, c) * efficiency)
                   for k, (r, c) in enumerate(sources)}
        joint = fit_terms(counts, good, {**background_terms, **shadows})
        # the background is the model minus the sources: IMAG images the sources
        fit = ModelFit(sum((joint.terms[k] for k in background_terms), np.zeros(counts.shape)),
                       {k: joint.coefficients[k] for k in background_terms},
                       {k: v for k, v in joint.predictions.items() if k in background_terms},
                       {k: joint.terms[k] for k in background_terms}, joint.n_free)
    extras = {"SMARTSRC": (len(sources), "sources fitted jointly with the background"),
              "SMARTIT": (rounds, "rounds of fit and source search")}
    return dataclasses.replace(fit, extras=extras)


BackgroundMode = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", Mapping], ModelFit]
BACKGROUND_MODES: dict[str, BackgroundMode] = {
    "no_correction": no_correction,
    "flat": flat,
    "shape": shape,
    "flat_moretti": flat_moretti,
    "shape_moretti": shape_moretti,
    "shape_moretti_earth": shape_moretti_earth,
    "shape_moretti_earth_ref": shape_moretti_earth_ref,
    "shape_moretti_smart": shape_moretti_smart,
}
# the modes that need the physics context (predicted CXB / Earth images of the key)
PHYSICS_MODES = ("flat_moretti", "shape_moretti", "shape_moretti_earth",
                 "shape_moretti_earth_ref", "shape_moretti_smart")
# the modes that model the Earth in the field (its occultation of the CXB and its emission)
EARTH_MODES = ("shape_moretti_earth", "shape_moretti_earth_ref", "shape_moretti_smart")


def available_modes() -> tuple[str, ...]:
    return tuple(BACKGROUND_MODES)


def correct_background(mode: str, counts, good, template=None,
                       context: Mapping | None = None) -> BackgroundResult:
    """Fit background `mode` to an (80, 80) counts image over the good pixels and remove it.

    good: (80, 80) bool mask or weights (> 0 = used); template: (80, 80) sky-illumination
    template for `shape`; context: {"efficiency": (80, 80) flat field, the predicted counts
    images "cxb_unocculted", "cxb_visible", "earth_emission" (kernels/earth.py), and for
    `shape_moretti_smart` "mask_pattern", "detection" (snr_threshold, pcode_min, win_dim)}.
    """
    if mode not in BACKGROUND_MODES:
        raise EcpiError(f"[bube] bkg_cor_mod = {mode!r} is not a background mode; available: "
                        f"{', '.join(available_modes())}")
    counts = np.asarray(counts, dtype=float)
    good = np.asarray(good) > 0
    if counts.shape != good.shape:
        raise EcpiError(f"counts {counts.shape} and good-pixel mask {good.shape} differ in shape")
    if not good.any():
        zeros = np.zeros(counts.shape)
        return BackgroundResult(zeros, zeros.copy(), zeros.copy(), {}, mode)
    fit = BACKGROUND_MODES[mode](counts, good, template, context or {})
    corrected = np.where(good, counts - fit.model, 0.0)
    variance = np.where(good, counts, 0.0)
    statistic = fit_statistics(counts[good], fit.model[good], fit.n_free)
    return BackgroundResult(corrected, variance, np.where(good, fit.model, 0.0),
                            dict(fit.coefficients), mode, dict(fit.predictions), statistic,
                            dict(fit.terms), dict(fit.extras))
