"""Source detection in balanced sky images (SCIENCE.md, "Coded-mask imaging": PSF and
localisation; ICD ECL-SOP-IMA).

Peaks: local maxima of the SNR image above a threshold where the partial coding is at least
pcode_min. Each peak is refined by a generalised least-squares fit, in a (2 win_dim + 1)^2 window,
of amplitude x PSF(row - row0, col - col0) + constant. The PSF is, by preference, computed
numerically from the correlation plan (the balanced image of a forward-projected unit source at
the peak pixel, with the same pixel weights), interpolated bilinearly at sub-pixel offsets, the
same linear-in-shift model as the shadowgram; without a plan it is the analytic separable
profile: the autocorrelation of one mask element (a triangle of half-width 540/46/4.5 = 2.609
sky pixels) convolved with that of one 4.5 mm cell (a triangle of half-width 1), sampled at
integer offsets and linearly interpolated.

Errors: neighbouring sky pixels are strongly correlated (the PSF spans ~5 pixels), so the fit
is a generalised least squares: the noise correlation of two sky pixels is the PSF at their
offset (exact for a balanced estimator and a uniform detector variance), scaled by their V.
Parameter errors come from the Jacobian of the whitened residuals.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import linalg, ndimage, optimize

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import imaging

MASK_ELEMENT_SKY_PIXELS = instrument.MASK_PITCH_MM / instrument.PIXEL_PITCH_MM  # 2.609
PEAK_NEIGHBOURHOOD = 5  # pixels: local maxima closer than ~the PSF half-width are one source
RADIUS_90_PER_SIGMA = float(np.sqrt(2.0 * np.log(10.0)))  # 2.146 for a circular 2-D Gaussian
SYSTEMATIC_ERROR_ARCMIN = 1.0
_MAX_SHIFT = 1.5  # sky pixels: the fitted position stays near its peak pixel


@dataclass(frozen=True)
class Detection:
    row: float  # 0-based sub-pixel position on the 199 x 199 sky grid
    col: float
    row_err: float  # 1-sigma, sky pixels
    col_err: float
    snr: float  # sky-image SNR at the peak pixel: the detection statistic
    flux: float  # S at the fitted position: counts per fully open pixel
    flux_err: float
    pcode: float


# ------------------------------------------------------------------------------------------
# PSF models: callables (d_rows, d_cols) -> response relative to the peak (1 at offset 0)
# ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _element_response_samples(half_width):
    """Integer-offset samples of the mask-element autocorrelation (triangle of half_width)
    convolved with the autocorrelation of one 4.5 mm cell (triangle of half-width 1)."""
    offsets = np.arange(-int(np.ceil(half_width)) - 1, int(np.ceil(half_width)) + 2, dtype=float)
    t = np.linspace(-1.0, 1.0, 4001)
    cell = 1.0 - np.abs(t)
    values = np.array([np.trapezoid(np.clip(1.0 - np.abs(k - t) / half_width, 0.0, None) * cell, t)
                       for k in offsets])
    return offsets, values / values[len(offsets) // 2]


def mask_element_profile(offset, half_width=MASK_ELEMENT_SKY_PIXELS):
    """Analytic 1-d PSF, 1 at offset 0: integer samples of the element x cell autocorrelation,
    linearly interpolated in between (the shadow is linear in the sub-pixel shift)."""
    offsets, values = _element_response_samples(float(half_width))
    return np.interp(np.asarray(offset, dtype=float), offsets, values, left=0.0, right=0.0)


def separable_psf(d_rows, d_cols):
    return mask_element_profile(d_rows) * mask_element_profile(d_cols)


def numerical_psf(plan, weights, row: int, col: int, half_size: int, terms=None) -> Callable:
    """Balanced image of a unit source at sky pixel (row, col), sampled over +-half_size pixels
    around it and interpolated bilinearly (0 beyond the window)."""
    response = imaging.balanced_intensity(plan, imaging.forward_project(plan, row, col), weights,
                                          terms)
    padded = np.pad(response, half_size)
    window = padded[row:row + 2 * half_size + 1, col:col + 2 * half_size + 1]
    if not window[half_size, half_size] > 0:  # the peak pixel is not measured
        return separable_psf
    window = window / window[half_size, half_size]

    def psf(d_rows, d_cols):
        coords = np.stack([np.asarray(d_rows, float) + half_size,
                           np.asarray(d_cols, float) + half_size])
        return ndimage.map_coordinates(window, coords.reshape(2, -1), order=1, cval=0.0).reshape(
            np.shape(d_rows))
    return psf


# ------------------------------------------------------------------------------------------
# Peak finding and fitting
# ------------------------------------------------------------------------------------------
def _local_maxima(snr, pcode, snr_threshold, pcode_min):
    candidate = np.where(pcode >= pcode_min, snr, -np.inf)
    peaks = (candidate == ndimage.maximum_filter(candidate, size=PEAK_NEIGHBOURHOOD,
                                                 mode="constant", cval=-np.inf))
    peaks &= candidate >= snr_threshold
    rows, cols = np.nonzero(peaks)
    order = np.argsort(-candidate[rows, cols], kind="stable")
    return rows[order], cols[order]


def _noise_whitener(sky, rows, cols, psf):
    """Lower Cholesky factor of the noise covariance of the window pixels.

    For a balanced estimator and a uniform detector variance, the correlation of two sky
    pixels is the PSF at their offset (the balanced kernel's autocorrelation); each pixel's
    variance scales it.
    """
    correlation = psf(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])
    correlation = 0.5 * (correlation + correlation.T)
    sigma = np.sqrt(sky.variance[rows, cols])
    covariance = correlation * np.outer(sigma, sigma)
    for jitter in (1e-9, 1e-6, 1e-3, 1e-1):  # the interpolated PSF is only nearly positive
        try:
            return np.linalg.cholesky(covariance + jitter * np.diag(sigma**2))
        except np.linalg.LinAlgError:
            continue
    return np.diag(sigma)


def _fit_peak(sky, row0, col0, half, psf) -> Detection | None:
    n_sky = sky.intensity.shape[0]
    rows, cols = np.mgrid[max(0, row0 - half):min(n_sky, row0 + half + 1),
                          max(0, col0 - half):min(n_sky, col0 + half + 1)]
    use = np.isfinite(sky.variance[rows, cols]) & (sky.variance[rows, cols] > 0)
    if use.sum() < 5:
        return None
    rows, cols = rows[use], cols[use]
    d_rows, d_cols, data = rows - row0, cols - col0, sky.intensity[rows, cols]
    # generalised least squares: neighbouring sky pixels share most of their counts
    whitener = _noise_whitener(sky, rows, cols, psf)

    def whiten(r):
        return linalg.solve_triangular(whitener, r, lower=True)

    def residuals(p):
        amplitude, shift_row, shift_col, constant = p
        return whiten(data - amplitude * psf(d_rows - shift_row, d_cols - shift_col) - constant)

    start = [sky.intensity[row0, col0], 0.0, 0.0, float(np.median(data))]
    bounds = ([-np.inf, -_MAX_SHIFT, -_MAX_SHIFT, -np.inf],
              [np.inf, _MAX_SHIFT, _MAX_SHIFT, np.inf])
    fit = optimize.least_squares(residuals, start, bounds=bounds, x_scale="jac")
    amplitude, shift_row, shift_col, _ = fit.x
    try:
        covariance = np.linalg.inv(fit.jac.T @ fit.jac)
    except np.linalg.LinAlgError:
        return None
    row, col = row0 + shift_row, col0 + shift_col
    nearest = (int(np.clip(round(row), 0, n_sky - 1)), int(np.clip(round(col), 0, n_sky - 1)))
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    flux_err = float(errors[0])
    return Detection(row=float(row), col=float(col), row_err=float(errors[1]),
                     col_err=float(errors[2]),
                     snr=float(sky.snr[row0, col0]),
                     flux=float(amplitude), flux_err=flux_err, pcode=float(sky.pcode[nearest]))


def find_sources(sky: imaging.SkyImages, snr_threshold: float, pcode_min: float,
                 win_dim: float, max_sources: int = 50, plan=None, weights=None,
                 exclude=(), exclude_radius: float = 2.0, terms=None) -> list[Detection]:
    """Sources above snr_threshold where pcode >= pcode_min, brightest first, each fitted in a
    (2 round(win_dim) + 1)^2 window. With `plan` and `weights`, the PSF is computed from them
    (recommended); otherwise the analytic separable profile is used. Peaks within
    exclude_radius pixels of an `exclude` (row, col) are skipped before any fit; `terms` are
    imaging.balance_terms(plan, weights) when already computed."""
    if not win_dim >= 1:
        raise EcpiError(f"[imag] win_dim must be at least 1 sky pixel, got {win_dim}")
    half = int(round(win_dim))
    rows, cols = _local_maxima(sky.snr, sky.pcode, snr_threshold, pcode_min)
    keep = [not any(np.hypot(r - er, c - ec) < exclude_radius for er, ec in exclude)
            for r, c in zip(rows, cols)]
    rows, cols = rows[np.asarray(keep, dtype=bool)], cols[np.asarray(keep, dtype=bool)]
    if terms is None and plan is not None and len(rows):
        terms = imaging.balance_terms(plan, weights)
    found = []
    for row0, col0 in zip(rows, cols):
        if len(found) >= max_sources:
            break
        psf = (separable_psf if plan is None
               else numerical_psf(plan, weights, int(row0), int(col0), 2 * half + 2, terms))
        detection = _fit_peak(sky, int(row0), int(col0), half, psf)
        if detection is not None:
            found.append(detection)
    return found


# ------------------------------------------------------------------------------------------
# Error radius
# ------------------------------------------------------------------------------------------
def local_pixel_scale_arcmin(row=instrument.SKY_CENTRE, col=instrument.SKY_CENTRE):
    """Angular size of a sky pixel at (row, col): sqrt of its solid angle (TAN grid: the pixel
    shrinks as cos^2 radially and cos tangentially)."""
    cos_theta = instrument.sky_pixel_to_los(row, col)[..., 0]
    return instrument.SKY_PIXEL_DEG * 60.0 * cos_theta**1.5


def error_radius_arcmin(snr, row_err, col_err, row=instrument.SKY_CENTRE,
                        col=instrument.SKY_CENTRE, systematic_arcmin=SYSTEMATIC_ERROR_ARCMIN):
    """90 % error radius: 2.146 x the rms axis error in angle, plus a systematic in quadrature.

    Where the fitted errors are not finite, falls back on SCIENCE.md's rule, the 90 % radius of
    a PSF of 1.46 deg FWHM: 2.146 x FWHM / (2.355 SNR), about 80 arcmin / SNR on axis.
    """
    sigma_px = np.sqrt(0.5 * (np.square(row_err) + np.square(col_err)))
    statistical = RADIUS_90_PER_SIGMA * sigma_px * local_pixel_scale_arcmin(row, col)
    rule = rule_of_thumb_radius_arcmin(snr)
    statistical = np.where(np.isfinite(statistical), statistical, rule)
    return np.hypot(statistical, systematic_arcmin)


def rule_of_thumb_radius_arcmin(snr):
    """SCIENCE.md: 2.146 FWHM / (2.355 SNR), FWHM = one mask element at 460 mm (87.7 arcmin)."""
    fwhm_arcmin = np.degrees(instrument.MASK_PITCH_MM / instrument.MASK_HEIGHT_MM) * 60.0
    return RADIUS_90_PER_SIGMA * fwhm_arcmin / (2.355 * np.maximum(np.asarray(snr, float), 1e-9))
