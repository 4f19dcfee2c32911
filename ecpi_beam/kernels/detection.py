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
2. Position and flux: a generalised least-squares fit of flux x response(row, col) +
   constant, the response being the image of the shadowgram of a unit source AT the
   fractional position (`shadow`, by default the exact thin-mask shadow the caller models the
   data with), the position refined from step 1's by Gauss-Newton steps. The interpolated PSF
   of step 1 is not the response of a source between pixel centres: the shadow of a 4.0 mm
   active pixel is sharper than the 4.5 mm cells the image is made of, so the true peak is
   higher and narrower than the interpolated one; fluxes fitted with it came out 1-13 % high
   and positions were pulled towards pixel centres by up to 0.025 pixel.

Errors: neighbouring sky pixels are strongly correlated (the PSF spans ~5 pixels), so both fits
are generalised least squares: the noise correlation of two sky pixels is the PSF at their
offset (exact for a balanced estimator and a uniform detector variance), scaled by their V, a
tenth of it made white for step 2 (robust where that model fails). Given the detector
variance, the errors are the exact covariance of the estimates (each window pixel a linear
combination of independent detector pixels, imaging.estimator_coefficients); otherwise the
fits' model covariance. kernels/error_model.py turns them into ERR_RAD and FLUX_ERR.
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
_MAX_SHIFT = 1.5  # sky pixels: the fitted position stays near its peak pixel
_RESPONSE_STEP = 0.05  # sky pixels: finite difference of the exact response
_RESPONSE_MAX_STEP = 0.3  # sky pixels: largest Gauss-Newton step of the refined position
_RESPONSE_TOLERANCE = 2e-3  # sky pixels: converged
_RESPONSE_STEPS = 4
# White fraction added to the PSF correlation of the flux fit's noise model. The PSF is the
# exact correlation only for a uniform detector variance over a fully coded field; elsewhere a
# PSF-only model can be nearly singular, and the linear fit then leans on pixel differences
# whose real noise it underrates (fluxes 25 % off with 3 % errors were measured at some places
# of the partially coded field). 10 % removes those outliers at 1-2 % in precision.
FLUX_NOISE_WHITE_FRACTION = 0.1


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


def _noise_whitener(sky, rows, cols, psf, white_fraction=0.0):
    """Lower Cholesky factor of the noise covariance of the window pixels.

    For a balanced estimator and a uniform detector variance, the correlation of two sky
    pixels is the PSF at their offset (the balanced kernel's autocorrelation); each pixel's
    variance scales it. `white_fraction` of it is made white (uncorrelated), which keeps a
    linear fit robust where that assumption fails.
    """
    correlation = psf(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])
    correlation = (1.0 - white_fraction) * 0.5 * (correlation + correlation.T) \
        + white_fraction * np.eye(len(rows))
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


@dataclass(frozen=True)
class SourceModel:
    """A unit source (1 count per fully open pixel) at a fractional sky position as it
    appears in the image being fitted: its detector shadowgram `shadow(row, col)` imaged with
    the plan, pixel weights and balance terms of that image."""

    plan: object
    weights: np.ndarray
    shadow: Callable
    terms: object = None

    def window(self, rows, cols) -> "SkyWindow":
        return SkyWindow(rows, cols, imaging.estimator_coefficients(
            self.plan, self.weights, rows, cols, self.terms).reshape(len(rows), -1))

    def response(self, window: "SkyWindow", row: float, col: float) -> np.ndarray:
        """The unit source's image at the window's pixels (exact: the same linear map as
        imaging.balanced_intensity, restricted to those pixels)."""
        return window.coefficients @ np.ravel(self.shadow(float(row), float(col)))


@dataclass(frozen=True)
class SkyWindow:
    """The pixels of a fit window and each one's estimator coefficients: the intensity of
    sky pixel k is coefficients[k] . D over the detector pixels D."""

    rows: np.ndarray
    cols: np.ndarray
    coefficients: np.ndarray  # (n, 6400)

    def covariance(self, sensitivity, detector_variance) -> np.ndarray:
        """Covariance of estimates `sensitivity @ S[window]` linear in the window's pixels,
        detector pixels being independent with variance `detector_variance`."""
        detector_weights = np.atleast_2d(sensitivity) @ self.coefficients
        return (detector_weights * np.ravel(detector_variance)) @ detector_weights.T


def _measured_window(sky, row0: int, col0: int, half: int):
    """(rows, cols) of the measured pixels of the (2 half + 1)^2 window at (row0, col0), None
    where fewer than 5 are."""
    n_rows, n_cols = sky.intensity.shape
    rows, cols = np.mgrid[max(0, row0 - half):min(n_rows, row0 + half + 1),
                          max(0, col0 - half):min(n_cols, col0 + half + 1)]
    use = np.isfinite(sky.variance[rows, cols]) & (sky.variance[rows, cols] > 0)
    return (rows[use], cols[use]) if use.sum() >= 5 else None


def _fit_peak(sky, row0, col0, half, psf, model: SourceModel | None = None,
              detector_variance=None) -> Detection | None:
    """A source near peak pixel (row0, col0), in a (2 half + 1)^2 window.

    1. Position: a non-linear fit of the interpolated PSF.
    2. With `model`: the position refined, and the flux fitted, with the exact response of a
       unit source at the fractional position (`_fit_response`).
    3. Errors: with `detector_variance` (and `model`), the exact covariance of these
       estimates (linearised for the position); otherwise the fits' own (model) covariance.
    """
    pixels = _measured_window(sky, row0, col0, half)
    if pixels is None:
        return None
    rows, cols = pixels
    d_rows, d_cols, data = rows - row0, cols - col0, sky.intensity[rows, cols]
    # generalised least squares: neighbouring sky pixels share most of their counts
    unwhitener = _inverse(_noise_whitener(sky, rows, cols, psf))

    def residuals(p):
        amplitude, shift_row, shift_col, constant = p
        return unwhitener @ (data - amplitude * psf(d_rows - shift_row, d_cols - shift_col)
                             - constant)

    start = [sky.intensity[row0, col0], 0.0, 0.0, float(np.median(data))]
    fit = solvers.bounded_least_squares(residuals, start,
                                        lower=[-np.inf, -_MAX_SHIFT, -_MAX_SHIFT, -np.inf],
                                        upper=[np.inf, _MAX_SHIFT, _MAX_SHIFT, np.inf])
    amplitude, shift_row, shift_col, _ = fit.x
    row, col = row0 + shift_row, col0 + shift_col
    try:
        normal_inverse = np.linalg.inv(fit.jac.T @ fit.jac)
    except np.linalg.LinAlgError:
        return None
    # a change dS of the window data moves the parameters by (J^T J)^-1 J^T L^-1 dS (up to
    # the sign), whatever the noise model that chose L: this is what the exact covariance needs
    sensitivity = normal_inverse @ fit.jac.T @ unwhitener
    estimate = np.array([amplitude, row, col])
    covariance = normal_inverse[:3, :3]
    window = None
    if model is not None:
        window = model.window(rows, cols)
        refined = _fit_response(data, window, model, row, col,
                                _inverse(_noise_whitener(sky, rows, cols, psf,
                                                         FLUX_NOISE_WHITE_FRACTION)))
        if refined is not None:
            estimate, covariance, sensitivity = refined
    if window is not None and detector_variance is not None:
        covariance = window.covariance(sensitivity[:3], detector_variance)
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    flux, row, col = (float(value) for value in estimate)
    n_sky = sky.intensity.shape[0]
    nearest = (int(np.clip(round(row), 0, n_sky - 1)), int(np.clip(round(col), 0, n_sky - 1)))
    return Detection(row=row, col=col, row_err=float(errors[1]), col_err=float(errors[2]),
                     snr=float(sky.snr[row0, col0]), flux=flux, flux_err=float(errors[0]),
                     pcode=float(sky.pcode[nearest]))


def _inverse(lower):
    return np.linalg.solve(lower, np.eye(len(lower)))


def _fit_response(data, window, model, row, col, unwhitener):
    """data = flux x response(row, col) + constant by generalised least squares, the position
    refined from the PSF fit's by Gauss-Newton steps (the flux and constant solved exactly at
    each step): ((flux, row, col), their model covariance, their sensitivity to the window
    data), or None when the response is not measurable there or the position runs away.

    The interpolated PSF of the first fit is not the response of a source between pixel
    centres (a 4.0 mm pixel's shadow is sharper than the 4.5 mm cells the image is made of):
    it pulls positions towards pixel centres by up to 0.025 pixel and fluxes up by 1-13 %.
    The exact response has neither bias."""
    whitened, constant = unwhitener @ data, unwhitener @ np.ones_like(data)

    def linearised(row, col):
        """(flux, constant) solved at (row, col), and the Jacobian of the whitened model in
        (flux, constant, row, col); None where the response is not measurable."""
        response = unwhitener @ model.response(window, row, col)
        design = np.column_stack([response, constant])
        normal = design.T @ design
        if not np.all(np.isfinite(normal)) or np.linalg.cond(normal) > 1e12:
            return None
        amplitudes = np.linalg.solve(normal, design.T @ whitened)
        slopes = [amplitudes[0] * (unwhitener @ model.response(window, *shifted) - response)
                  / _RESPONSE_STEP
                  for shifted in ((row + _RESPONSE_STEP, col), (row, col + _RESPONSE_STEP))]
        return amplitudes, np.column_stack([design, *slopes]), design

    start = (row, col)
    for _ in range(_RESPONSE_STEPS):
        current = linearised(row, col)
        if current is None:
            return None
        amplitudes, jacobian, design = current
        step, *_ = np.linalg.lstsq(jacobian, whitened - design @ amplitudes, rcond=None)
        shift = np.clip(step[2:], -_RESPONSE_MAX_STEP, _RESPONSE_MAX_STEP)
        row, col = row + shift[0], col + shift[1]
        if np.hypot(row - start[0], col - start[1]) > 1.0:
            return None  # not this peak's source any more
        if np.all(np.abs(shift) < _RESPONSE_TOLERANCE):
            break
    final = linearised(row, col)
    if final is None:
        return None
    amplitudes, jacobian, _ = final
    try:
        normal_inverse = np.linalg.inv(jacobian.T @ jacobian)
    except np.linalg.LinAlgError:
        return None
    order = [0, 2, 3]  # flux, row, col
    sensitivity = (normal_inverse @ jacobian.T @ unwhitener)[order]
    return (np.array([amplitudes[0], row, col]), normal_inverse[np.ix_(order, order)],
            sensitivity)


def source_model(plan, weights, terms=None, shadow=None) -> SourceModel:
    """The SourceModel of an image made with plan and weights; `shadow(row, col)` the unit
    source's (80, 80) shadowgram, by default the plan's bilinear forward projection."""
    terms = imaging.balance_terms(plan, weights) if terms is None else terms
    shadow = shadow or (lambda row, col: imaging.forward_project(plan, row, col))
    return SourceModel(plan, np.asarray(weights, dtype=float), shadow, terms)


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
    model = (source_model(plan, weights, terms, shadow)
             if plan is not None and len(rows) and measure_flux else None)
    found = []
    for row0, col0 in zip(rows, cols):
        if len(found) >= max_sources:
            break
        psf = (separable_psf if plan is None
               else numerical_psf(plan, weights, int(row0), int(col0), 2 * half + 2, terms))
        detection = _fit_peak(sky, int(row0), int(col0), half, psf, model)
        if detection is not None:
            found.append(detection)
    return found


def measure_source(sky: imaging.SkyImages, row: float, col: float, snr_threshold: float,
                   win_dim: float, plan=None, weights=None, terms=None, shadow=None,
                   search_radius: int = 2, detector_variance=None) -> Detection | None:
    """The source near (row, col): fitted from the highest-SNR pixel within `search_radius`
    pixels of it, None if that peak is below snr_threshold or cannot be fitted.
    `detector_variance`: the (80, 80) variance of the data the sky image was made of (with
    `plan` and `weights`); then the errors are the exact covariance of the estimates."""
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
    model = None if plan is None else source_model(plan, weights, terms, shadow)
    return _fit_peak(sky, peak_row, peak_col, half, psf, model, detector_variance)
