"""Source detection in balanced sky images (docs/science.md, "Coded-mask imaging": PSF and
localisation; ICD ECL-SOP-IMA).

Peaks: local maxima of the SNR image above a threshold where the partial coding is at least
pcode_min. Each peak is measured in a (2 win_dim + 1)^2 window in two steps (docs/imaging.md):

1. Position: a generalised least-squares fit of amplitude x PSF(row - row0, col - col0) +
   constant. The PSF is, by preference, computed numerically from the correlation plan (the
   balanced image of a forward-projected unit source at the peak pixel, with the same pixel
   weights), interpolated bilinearly at sub-pixel offsets; without a plan it is the analytic
   separable profile: the autocorrelation of one mask element (a triangle of half-width
   540/46/4.5 = 2.609 sky pixels) convolved with that of one 4.5 mm cell (a triangle of
   half-width 1), sampled at integer offsets and linearly interpolated.
2. Flux: a linear generalised least-squares fit of amplitude x template + constant, the
   template being the balanced image of the shadowgram of a unit source AT the fitted
   sub-pixel position (`shadow`, by default the exact thin-mask shadow the caller models the
   data with). The interpolated PSF of step 1 is not the response of a source between pixel
   centres: the shadow of a 4.0 mm active pixel is sharper than the 4.5 mm cells the image is
   made of, so the true peak is higher and narrower than the interpolated one, and fluxes
   fitted with it came out 1-13 % high depending on the sub-pixel offset.

Errors: neighbouring sky pixels are strongly correlated (the PSF spans ~5 pixels), so both fits
are generalised least squares: the noise correlation of two sky pixels is the PSF at their
offset (exact for a balanced estimator and a uniform detector variance), scaled by their V.
Parameter errors come from the Jacobian of the whitened residuals; the flux pulls over random
sub-pixel positions have a standard deviation within 10 % of 1 (tests/test_detection.py).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import imaging, solvers

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
    flux: float  # counts per fully open detector pixel of the source at the fitted position
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
        return bilinear(window, np.asarray(d_rows) + half_size, np.asarray(d_cols) + half_size)
    return psf


def bilinear(image, rows, cols):
    """image interpolated linearly at (rows, cols), 0 outside [0, n - 1] on either axis
    (scipy.ndimage.map_coordinates with order=1, mode='constant', cval=0); whole-pixel
    positions (the noise model's pixel offsets) are read directly."""
    n_rows, n_cols = image.shape
    rows, cols = np.asarray(rows), np.asarray(cols)
    if rows.dtype.kind in "iu" and cols.dtype.kind in "iu":
        inside = (rows >= 0) & (rows < n_rows) & (cols >= 0) & (cols < n_cols)
        return np.where(inside, image[np.where(inside, rows, 0), np.where(inside, cols, 0)], 0.0)
    inside = (rows >= 0) & (rows <= n_rows - 1) & (cols >= 0) & (cols <= n_cols - 1)
    r = np.where(inside, rows, 0.0)
    c = np.where(inside, cols, 0.0)
    r0 = np.minimum(np.floor(r).astype(np.intp), max(n_rows - 2, 0))
    c0 = np.minimum(np.floor(c).astype(np.intp), max(n_cols - 2, 0))
    fr, fc = r - r0, c - c0
    r1, c1 = np.minimum(r0 + 1, n_rows - 1), np.minimum(c0 + 1, n_cols - 1)
    value = ((1 - fr) * ((1 - fc) * image[r0, c0] + fc * image[r0, c1])
             + fr * ((1 - fc) * image[r1, c0] + fc * image[r1, c1]))
    return np.where(inside, value, 0.0)


def maximum_filter(image, size: int, cval: float = -np.inf):
    """The maximum over each size x size neighbourhood, cval beyond the edges (what
    scipy.ndimage.maximum_filter(image, size, mode='constant', cval=cval) gives), in two
    separable passes."""
    before = size // 2
    after = size - 1 - before
    result = np.asarray(image, dtype=float)
    for axis in (0, 1):
        padding = [(0, 0), (0, 0)]
        padding[axis] = (before, after)
        padded = np.pad(result, padding, constant_values=cval)
        length = result.shape[axis]

        def shifted(k, axis=axis, padded=padded, length=length):
            return padded[(slice(None),) * axis + (slice(k, k + length),)]
        result = shifted(0).copy()
        for k in range(1, size):  # in place, no stack of shifted copies
            np.maximum(result, shifted(k), out=result)
    return result


# ------------------------------------------------------------------------------------------
# Peak finding and fitting
# ------------------------------------------------------------------------------------------
def _local_maxima(snr, pcode, snr_threshold, pcode_min):
    candidate = np.where(pcode >= pcode_min, snr, -np.inf)
    peaks = candidate == maximum_filter(candidate, PEAK_NEIGHBOURHOOD, cval=-np.inf)
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
    return _cholesky(correlation * np.outer(sigma, sigma), sky.variance[rows, cols])


def _cholesky(covariance, variance):
    """Lower Cholesky factor, with a growing diagonal jitter where the matrix is only nearly
    positive (an interpolated PSF; round-off); the diagonal alone as a last resort."""
    for jitter in (0.0, 1e-9, 1e-6, 1e-3, 1e-1):
        try:
            return np.linalg.cholesky(covariance + jitter * np.diag(variance))
        except np.linalg.LinAlgError:
            continue
    return np.diag(np.sqrt(variance))


def _measured_window(sky, row0: int, col0: int, half: int):
    """(rows, cols) of the measured pixels of the (2 half + 1)^2 window at (row0, col0), None
    where fewer than 5 are."""
    n_rows, n_cols = sky.intensity.shape
    rows, cols = np.mgrid[max(0, row0 - half):min(n_rows, row0 + half + 1),
                          max(0, col0 - half):min(n_cols, col0 + half + 1)]
    use = np.isfinite(sky.variance[rows, cols]) & (sky.variance[rows, cols] > 0)
    return (rows[use], cols[use]) if use.sum() >= 5 else None


def _fit_peak(sky, row0, col0, half, psf, source_image=None) -> Detection | None:
    """Position by a non-linear fit of the interpolated PSF, then (with `source_image`, a
    callable (row, col) -> (199, 199) balanced image of a unit source) the flux by a linear
    fit of the exact response at that position, with the same noise model."""
    n_sky = sky.intensity.shape[0]
    window = _measured_window(sky, row0, col0, half)
    if window is None:
        return None
    rows, cols = window
    d_rows, d_cols, data = rows - row0, cols - col0, sky.intensity[rows, cols]
    # generalised least squares: neighbouring sky pixels share most of their counts
    whitener = _noise_whitener(sky, rows, cols, psf)
    unwhitener = np.linalg.solve(whitener, np.eye(len(whitener)))  # L^-1, once per fit

    def whiten(r):
        return unwhitener @ r

    def residuals(p):
        amplitude, shift_row, shift_col, constant = p
        return whiten(data - amplitude * psf(d_rows - shift_row, d_cols - shift_col) - constant)

    start = [sky.intensity[row0, col0], 0.0, 0.0, float(np.median(data))]
    fit = solvers.bounded_least_squares(residuals, start,
                                        lower=[-np.inf, -_MAX_SHIFT, -_MAX_SHIFT, -np.inf],
                                        upper=[np.inf, _MAX_SHIFT, _MAX_SHIFT, np.inf])
    amplitude, shift_row, shift_col, _ = fit.x
    try:
        covariance = np.linalg.inv(fit.jac.T @ fit.jac)
    except np.linalg.LinAlgError:
        return None
    row, col = row0 + shift_row, col0 + shift_col
    nearest = (int(np.clip(round(row), 0, n_sky - 1)), int(np.clip(round(col), 0, n_sky - 1)))
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    flux, flux_err = float(amplitude), float(errors[0])
    if source_image is not None:
        template = source_image(float(row), float(col))[rows, cols]
        flux, flux_err = _linear_amplitude(whiten(data), whiten(template),
                                           whiten(np.ones_like(data)), (flux, flux_err))
    return Detection(row=float(row), col=float(col), row_err=float(errors[1]),
                     col_err=float(errors[2]),
                     snr=float(sky.snr[row0, col0]),
                     flux=flux, flux_err=flux_err, pcode=float(sky.pcode[nearest]))


def _linear_amplitude(data, template, constant, fallback):
    """(a, sigma_a) of the whitened model data = a template + c constant; `fallback` when the
    template is not measurable there."""
    design = np.column_stack([template, constant])
    normal = design.T @ design
    if not np.all(np.isfinite(normal)) or np.linalg.cond(normal) > 1e12:
        return fallback
    covariance = np.linalg.inv(normal)
    amplitude = covariance @ (design.T @ data)
    return float(amplitude[0]), float(np.sqrt(max(covariance[0, 0], 0.0)))


def amplitude_profile(sky: imaging.SkyImages, rows, cols, templates,
                      psf: Callable = separable_psf) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the linear generalised least-squares fits of data = amplitude x template +
    constant over the pixels (rows, cols), one fit per column of `templates` (n_pixels, n),
    with the noise model of the position fit (`_noise_whitener`): a = t'.t' and b = t'.d',
    t' and d' the whitened template and data with the constant projected out. The amplitude
    is b / a, its variance 1 / a, and chi2 = d'.d' - b^2 / a, so the (a, b) of independent
    images add: a joint fit of one amplitude to many images."""
    templates = np.asarray(templates, dtype=float).reshape(len(rows), -1)
    solved = np.linalg.solve(_noise_whitener(sky, rows, cols, psf), np.column_stack(
        [sky.intensity[rows, cols], np.ones(len(rows)), templates]))  # one solve for all
    data, constant, whitened = solved[:, 0], solved[:, 1], solved[:, 2:]
    norm = constant @ constant
    data = data - constant * (constant @ data) / norm
    whitened = whitened - np.outer(constant, constant @ whitened) / norm
    return np.einsum("ij,ij->j", whitened, whitened), whitened.T @ data


def amplitude_at(sky: imaging.SkyImages, row: float, col: float, win_dim: float,
                 psf: Callable = separable_psf) -> tuple[float, float] | None:
    """(flux, flux_err) of a source held at (row, col) (forced photometry: a light curve at a
    known position): amplitude_profile in the (2 round(win_dim) + 1)^2 window around it.
    None where fewer than 5 pixels of the window are measured."""
    window = _measured_window(sky, int(round(row)), int(round(col)), int(round(win_dim)))
    if window is None:
        return None
    rows, cols = window
    a, b = amplitude_profile(sky, rows, cols, psf(rows - row, cols - col)[:, None], psf)
    if not (np.isfinite(a[0]) and a[0] > 0):
        return None
    return float(b[0] / a[0]), float(1.0 / np.sqrt(a[0]))


def unit_source_image(plan, weights, terms=None, shadow=None) -> Callable:
    """(row, col) -> balanced image (199, 199) of a unit source (1 count per fully open pixel)
    at a fractional sky position; `shadow(row, col)` gives its (80, 80) shadowgram, by default
    the plan's bilinear forward projection."""
    terms = imaging.balance_terms(plan, weights) if terms is None else terms
    shadow = shadow or (lambda row, col: imaging.forward_project(plan, row, col))
    return lambda row, col: imaging.balanced_intensity(plan, shadow(row, col), weights, terms)


def find_sources(sky: imaging.SkyImages, snr_threshold: float, pcode_min: float,
                 win_dim: float, max_sources: int = 50, plan=None, weights=None,
                 exclude=(), exclude_radius: float = 2.0, terms=None,
                 shadow=None, measure_flux: bool = True) -> list[Detection]:
    """Sources above snr_threshold where pcode >= pcode_min, brightest first, each fitted in a
    (2 round(win_dim) + 1)^2 window. With `plan` and `weights`, the PSF is computed from them
    (recommended) and the flux is fitted with the response of a unit source at the fitted
    position, whose shadowgram is `shadow(row, col)` (the model of the data: the exact
    thin-mask shadow for real data; default the plan's forward projection); otherwise the
    analytic separable profile is used for both. Peaks within exclude_radius pixels of an
    `exclude` (row, col) are skipped before any fit; `terms` are
    imaging.balance_terms(plan, weights) when already computed; measure_flux=False keeps the
    amplitude of the position fit (a search that only needs positions)."""
    if not win_dim >= 1:
        raise EcpiError(f"[imag] win_dim must be at least 1 sky pixel, got {win_dim}")
    half = int(round(win_dim))
    rows, cols = _local_maxima(sky.snr, sky.pcode, snr_threshold, pcode_min)
    if len(exclude) and len(rows):
        excluded = np.asarray(exclude, dtype=float).reshape(-1, 2)
        distance = np.hypot(rows[:, None] - excluded[None, :, 0],
                            cols[:, None] - excluded[None, :, 1])
        keep = (distance >= exclude_radius).all(axis=1)
        rows, cols = rows[keep], cols[keep]
    if terms is None and plan is not None and len(rows):
        terms = imaging.balance_terms(plan, weights)
    source_image = (unit_source_image(plan, weights, terms, shadow)
                    if plan is not None and len(rows) and measure_flux else None)
    found = []
    for row0, col0 in zip(rows, cols):
        if len(found) >= max_sources:
            break
        psf = (separable_psf if plan is None
               else numerical_psf(plan, weights, int(row0), int(col0), 2 * half + 2, terms))
        detection = _fit_peak(sky, int(row0), int(col0), half, psf, source_image)
        if detection is not None:
            found.append(detection)
    return found


def measure_source(sky: imaging.SkyImages, row: float, col: float, snr_threshold: float,
                   win_dim: float, plan=None, weights=None, terms=None, shadow=None,
                   search_radius: int = 2) -> Detection | None:
    """The source near (row, col): fitted from the highest-SNR pixel within `search_radius`
    pixels of it, None if that peak is below snr_threshold or cannot be fitted."""
    n_sky = sky.snr.shape[0]
    row0, col0 = int(round(row)), int(round(col))
    top, left = max(0, row0 - search_radius), max(0, col0 - search_radius)
    box = sky.snr[top:row0 + search_radius + 1, left:col0 + search_radius + 1]
    if box.size == 0 or not np.nanmax(box) >= snr_threshold:
        return None
    peak_row, peak_col = np.unravel_index(int(np.nanargmax(box)), box.shape)
    peak_row, peak_col = min(top + int(peak_row), n_sky - 1), min(left + int(peak_col), n_sky - 1)
    half = int(round(win_dim))
    psf = (separable_psf if plan is None
           else numerical_psf(plan, weights, peak_row, peak_col, 2 * half + 2, terms))
    source_image = None if plan is None else unit_source_image(plan, weights, terms, shadow)
    return _fit_peak(sky, peak_row, peak_col, half, psf, source_image)


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

    Where the fitted errors are not finite, falls back on docs/science.md's rule, the 90 % radius of
    a PSF of 1.46 deg FWHM: 2.146 x FWHM / (2.355 SNR), about 80 arcmin / SNR on axis.
    """
    sigma_px = np.sqrt(0.5 * (np.square(row_err) + np.square(col_err)))
    statistical = RADIUS_90_PER_SIGMA * sigma_px * local_pixel_scale_arcmin(row, col)
    rule = rule_of_thumb_radius_arcmin(snr)
    statistical = np.where(np.isfinite(statistical), statistical, rule)
    return np.hypot(statistical, systematic_arcmin)


def rule_of_thumb_radius_arcmin(snr):
    """docs/science.md: 2.146 FWHM / (2.355 SNR), FWHM = one mask element at 460 mm (87.7 arcmin)."""
    fwhm_arcmin = np.degrees(instrument.MASK_PITCH_MM / instrument.MASK_HEIGHT_MM) * 60.0
    return RADIUS_90_PER_SIGMA * fwhm_arcmin / (2.355 * np.maximum(np.asarray(snr, float), 1e-9))
