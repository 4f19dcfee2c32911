"""Small least-squares solvers in numpy: non-negative least squares and a bounded non-linear
fit, the two that BUBE and IMAG need.

They replace scipy.optimize's nnls and least_squares on the pipeline's path: importing
scipy.optimize (with scipy.linalg, scipy.special and scipy.spatial behind it) was the largest
start-up cost after Beam's own, about a third of a second per run, for problems of a few
parameters. tests/test_solvers.py checks both against scipy's on random and degenerate
problems.

- `nnls`: the active-set algorithm of Lawson & Hanson (1974, "Solving Least Squares Problems",
  ch. 23), as scipy's is.
- `bounded_least_squares`: Levenberg-Marquardt (Marquardt 1963) with the damping scaled by the
  diagonal of J^T J (so the step does not depend on the parameters' units, as least_squares'
  `x_scale="jac"`), box bounds kept by projection, and a forward-difference Jacobian that
  steps away from a bound it sits on (least_squares' '2-point' scheme).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

_EPS = np.finfo(float).eps


def nnls(design, target, max_iterations: int | None = None):
    """(x, residual norm) minimising ||design x - target|| with x >= 0 (Lawson-Hanson)."""
    a = np.asarray(design, dtype=float)
    b = np.asarray(target, dtype=float)
    n = a.shape[1]
    max_iterations = 3 * n if max_iterations is None else max_iterations
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    gradient = a.T @ (b - a @ x)
    tolerance = 10 * _EPS * np.linalg.norm(a, 1) * max(a.shape)
    for _ in range(max_iterations):
        if passive.all() or not (gradient[~passive] > tolerance).any():
            break
        candidates = np.where(~passive, gradient, -np.inf)
        passive[int(np.argmax(candidates))] = True
        while True:
            trial = np.zeros(n)
            trial[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (trial[passive] > 0).all():
                x = trial
                break
            # step back to the first coefficient reaching 0, and let it leave the passive set
            shrinking = passive & (trial <= 0)
            gap = x[shrinking] - trial[shrinking]
            alpha = float(np.min(np.where(gap > 0, x[shrinking] / np.where(gap > 0, gap, 1.0),
                                          0.0)))
            x = x + alpha * (trial - x)
            passive &= x > tolerance
            x[~passive] = 0.0
        gradient = a.T @ (b - a @ x)
    return x, float(np.linalg.norm(a @ x - b))


class BoundedFit(NamedTuple):
    x: np.ndarray  # the parameters at the minimum
    jac: np.ndarray  # the residuals' Jacobian there (for the covariance (J^T J)^-1)
    cost: float  # half the sum of squared residuals
    n_evaluations: int


def _jacobian(residuals, x, r, lower, upper):
    """Forward differences, stepping backwards from an upper bound (never outside the box)."""
    steps = np.sqrt(_EPS) * np.maximum(1.0, np.abs(x))
    steps = np.where(x + steps > upper, -steps, steps)
    jac = np.empty((len(r), len(x)))
    for k, step in enumerate(steps):
        shifted = x.copy()
        shifted[k] += step
        jac[:, k] = (residuals(shifted) - r) / (shifted[k] - x[k])
    return jac


def bounded_least_squares(residuals: Callable, start, lower, upper, *, ftol: float = 1e-8,
                          xtol: float = 1e-8, gtol: float = 1e-8,
                          max_evaluations: int | None = None) -> BoundedFit:
    """Minimise 0.5 ||residuals(x)||^2 with lower <= x <= upper (Levenberg-Marquardt)."""
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    x = np.clip(np.asarray(start, dtype=float), lower, upper)
    max_evaluations = 100 * len(x) if max_evaluations is None else max_evaluations
    r = np.asarray(residuals(x), dtype=float)
    cost = 0.5 * float(r @ r)
    jac = _jacobian(residuals, x, r, lower, upper)
    evaluations = 1 + len(x)
    damping = 1e-3
    while evaluations < max_evaluations:
        gradient = jac.T @ r
        normal = jac.T @ jac
        # MINPACK's gtol: the residuals orthogonal to every free column of the Jacobian (a
        # gradient pushing out of the box at a bound does not count)
        blocked = ((x <= lower) & (gradient > 0)) | ((x >= upper) & (gradient < 0))
        column_norms = np.sqrt(np.diag(normal)) * max(np.linalg.norm(r), 1e-300)
        cosines = np.abs(gradient) / np.maximum(column_norms, 1e-300)
        if np.max(np.where(blocked, 0.0, cosines), initial=0.0) <= gtol:
            break
        scale = np.maximum(np.diag(normal), 1e-12 * max(np.max(np.diag(normal)), 1e-300))
        free = ~blocked  # parameters held at a bound they push against stay there
        step = np.zeros(len(x))
        try:
            step[free] = np.linalg.solve((normal + damping * np.diag(scale))[np.ix_(free, free)],
                                         -gradient[free])
        except np.linalg.LinAlgError:
            if damping > 1e16:  # no step can be solved for: where it is, is the answer
                break
            damping *= 10.0
            continue
        trial = np.clip(x + step, lower, upper)
        trial_r = np.asarray(residuals(trial), dtype=float)
        evaluations += 1
        trial_cost = 0.5 * float(trial_r @ trial_r)
        small_step = np.linalg.norm(trial - x) <= xtol * (xtol + np.linalg.norm(x))
        if trial_cost < cost:
            # small changes count as convergence only for a Gauss-Newton-like step: a heavily
            # damped step is small because of the damping, not because the minimum is near
            converged = damping <= 1e-3 and (cost - trial_cost <= ftol * cost or small_step)
            x, r, cost = trial, trial_r, trial_cost
            jac = _jacobian(residuals, x, r, lower, upper)
            evaluations += len(x)
            damping = max(damping / 3.0, 1e-12)
            if converged:
                break
        else:
            if small_step:
                break  # no step small enough improves: at the minimum within round-off
            damping *= 4.0
    return BoundedFit(x, jac, cost, evaluations)
