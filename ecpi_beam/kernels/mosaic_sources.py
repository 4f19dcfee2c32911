"""MOSA's sources: found on the mosaic, each refined with the instrument's PSF on a local
tangent-plane grid, and measured in every observation that saw it (docs/mosa.md).

1. Candidates: peaks of the all-sky mosaic's significance (mosaic.find_mosaic_sources).
2. Local grids: around each candidate, trial positions on the tangent plane at the candidate
   (rows north, columns east), TRIAL_STEP sky pixels apart (finer than the sky image's own
   resolution) over +-TRIAL_HALF steps. Each image that sees the candidate fits, for every
   trial position, the instrument's PSF (detection.separable_psf) held there plus a constant
   to its own pixels (no resampling), by generalised least squares with the PSF as the noise
   correlation, as IMAG fits a single image (detection.amplitude_profile): a = t'.t' and
   b = t'.d' per trial. These sums add over images: the accumulator of the joint fit of
   one amplitude to every image, so the grids of thousands of observations merge exactly, as
   the all-sky tiles do (what Swift/BAT's batmosaic facets are to batcelldetect, and
   INTEGRAL's mosaics to their source fitting, without resampling any image).
3. Fit: chi2 = const - b^2 / a over the merged grid; its minimum, refined by a quadratic fit
   of its neighbourhood, is the position, whose covariance is twice the inverse of chi2's
   Hessian there. Statistics, not the all-sky pixels, then limit the position. ERR_RAD is
   detection.error_radius_arcmin of those errors with MOSAIC_SYSTEMATIC_ARCMIN in quadrature.
4. Fluxes and light curves: each source's flux in each observation that saw it, the
   amplitude of the same PSF held at the source's position in that image alone
   (detection.amplitude_at: forced photometry, as the BAT transient monitor does); FLUX is
   their inverse-variance weighted mean, what the joint fit gives at that position.

In every image, the restored sources other than the one measured are left out (`alone`): IMAG
measures each source once the others are cleaned, and so does MOSA.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.kernels import cleaning, detection, imaging
from ecpi_beam.kernels.mosaic import (BEAM_REACH_PIXELS, PEAK_MERGE_DEG, SkyRates, _wcs_pixels,
                                      inverse_gnomonic)
from ecpi_beam.kernels.sky_analysis import SourceRow

FIT_HALF = 5  # fit window half-width in sky pixels: IMAG's default win_dim
TRIAL_STEP = 0.15  # sky pixels (5.0 arcmin) between trial positions
TRIAL_HALF = 8  # trials span +-1.2 sky pixels: the candidate is within half an all-sky pixel
# Systematic term of ERR_RAD on the mosaic, in quadrature with the fitted error: the residual
# scatter of the refined positions of bright sources on simulated campaigns beyond their
# statistical errors (docs/mosa.md, tests/test_mosa_survey.py).
MOSAIC_SYSTEMATIC_ARCMIN = 1.0
DUPLICATE_DEG = 0.5 * PEAK_MERGE_DEG  # two refined candidates this close are one source
# An image's restored source this close to the position measured is that source; the others
# are left out, as IMAG measures each source alone once the others are cleaned
# (kernels/cleaning.py): a neighbour's beam in the fit window would bias the amplitude.
OWN_SOURCE_DEG = cleaning.SAME_SOURCE_PIXELS * instrument.SKY_PIXEL_DEG


# ============================================================================================
# Local tangent-plane grids
# ============================================================================================
def trial_offsets(half: int = TRIAL_HALF, step: float = TRIAL_STEP):
    """(rows, cols) of the trial positions in sky pixels from the candidate, row-major."""
    rows, cols = np.mgrid[-half:half + 1, -half:half + 1] * step
    return rows.ravel(), cols.ravel()


def local_grid(ra0: float, dec0: float, half: int = TRIAL_HALF, step: float = TRIAL_STEP):
    """(RA, Dec) of the trial positions about (ra0, dec0): rows north, columns east, `step`
    sky pixels (4.5 / 460 rad) apart on the tangent plane."""
    rows, cols = trial_offsets(half, step)
    return inverse_gnomonic(cols * instrument.SKY_PIXEL_RAD, rows * instrument.SKY_PIXEL_RAD,
                            ra0, dec0)


def alone(rates: SkyRates, ra: float, dec: float) -> SkyRates:
    """The image with only its restored sources within OWN_SOURCE_DEG of (ra, dec) put back."""
    centre = instrument.radec_to_unit(ra, dec)
    limit = np.cos(np.radians(OWN_SOURCE_DEG))
    own = tuple(source for source in rates.sources
                if instrument.radec_to_unit(source.ra, source.dec) @ centre >= limit)
    return replace(rates, sources=own)


@dataclass(frozen=True, eq=False)
class PositionLikelihood:
    """The accumulator of one candidate's joint fit: per trial position, the sums over images
    of a = t'.t' and b = t'.d' (detection.amplitude_profile), and the number of images."""

    a: np.ndarray
    b: np.ndarray
    images: int = 1

    def __add__(self, other: "PositionLikelihood") -> "PositionLikelihood":
        return PositionLikelihood(self.a + other.a, self.b + other.b, self.images + other.images)


def position_likelihood(rates: SkyRates, ra0: float, dec0: float,
                        pcode_min: float) -> PositionLikelihood | None:
    """One image's contribution to the fit of the candidate at (ra0, dec0) (its source there
    alone), in its own pixels; None when it does not see the candidate with at least
    pcode_min partial coding, or measures too few pixels around it."""
    x0, y0 = (float(v[0]) for v in _wcs_pixels(rates.wcs_keywords, np.array([ra0]),
                                                np.array([dec0])))
    n_rows, n_cols = np.shape(rates.residual)
    if not (np.isfinite(x0) and np.isfinite(y0) and 0 <= round(y0) < n_rows
            and 0 <= round(x0) < n_cols):
        return None
    if not rates.pcode[int(round(y0)), int(round(x0))] >= pcode_min:
        return None
    window = image_window(alone(rates, ra0, dec0), int(round(y0)), int(round(x0)), FIT_HALF)
    if window is None:
        return None
    sky, top, left = window
    rows, cols = np.nonzero(np.isfinite(sky.variance))
    if len(rows) < 5:
        return None
    x, y = _wcs_pixels(rates.wcs_keywords, *local_grid(ra0, dec0))
    # the PSF at every trial for every pixel, one profile per window row and column
    row_profiles = detection.mask_element_profile(
        np.arange(sky.intensity.shape[0])[:, None] - (y - top)[None, :])
    col_profiles = detection.mask_element_profile(
        np.arange(sky.intensity.shape[1])[:, None] - (x - left)[None, :])
    templates = row_profiles[rows] * col_profiles[cols]
    a, b = detection.amplitude_profile(sky, rows, cols, templates)
    return PositionLikelihood(a, b)


def _quadratic_minimum(chi2, index: int, n: int):
    """(row, col) of the minimum of a quadratic fitted to chi2 around grid point `index`
    (in grid steps from the grid's centre) and its covariance; None without a minimum."""
    row0, col0 = divmod(index, n)
    row0, col0 = min(max(row0, 2), n - 3), min(max(col0, 2), n - 3)
    rows, cols = np.mgrid[row0 - 2:row0 + 3, col0 - 2:col0 + 3]
    values = chi2.reshape(n, n)[rows, cols].ravel()
    dr, dc = (rows - row0).ravel().astype(float), (cols - col0).ravel().astype(float)
    design = np.column_stack([np.ones_like(dr), dr, dc, dr**2, dr * dc, dc**2])
    coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
    _, g_r, g_c, h_rr, h_rc, h_cc = coefficients
    hessian = np.array([[2 * h_rr, h_rc], [h_rc, 2 * h_cc]])
    if not np.all(np.linalg.eigvalsh(hessian) > 0):
        return None
    shift = -np.linalg.solve(hessian, [g_r, g_c])
    if np.any(np.abs(shift) > 2.0):  # the quadratic does not describe this neighbourhood
        return None
    half = n // 2
    return row0 + shift[0] - half, col0 + shift[1] - half, 2.0 * np.linalg.inv(hessian)


def refine(candidate: SourceRow, likelihood: PositionLikelihood | None,
           systematic_arcmin: float = MOSAIC_SYSTEMATIC_ARCMIN) -> SourceRow:
    """The candidate at the minimum of its merged likelihood: position and ERR_RAD from the
    fit, FLUX and FLUX_ERR the joint amplitude there (with_flux then takes the light curve's,
    the same fit held at the final position); SNR stays the candidate's, the mosaic's
    significance at its peak pixel (the detection statistic, as SNR in ECL-SOP-IMA). The
    candidate itself when the likelihood has no minimum inside its grid."""
    if likelihood is None:
        return candidate
    a, b = likelihood.a, likelihood.b
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where((a > 0) & (b > 0), -b**2 / a, np.inf)  # + a constant: d'.d'
    if not np.isfinite(chi2).any():
        return candidate
    n = int(round(np.sqrt(len(chi2))))
    best = int(np.argmin(chi2))
    row_best, col_best = divmod(best, n)
    if min(row_best, col_best) == 0 or max(row_best, col_best) == n - 1:
        return candidate  # the minimum lies beyond the trials
    fitted = _quadratic_minimum(chi2, best, n)
    if fitted is None:
        return candidate
    d_row, d_col, covariance = fitted
    d_row, d_col = d_row * TRIAL_STEP, d_col * TRIAL_STEP  # sky pixels
    row_err, col_err = np.sqrt(np.diag(covariance)) * TRIAL_STEP
    ra, dec = inverse_gnomonic(d_col * instrument.SKY_PIXEL_RAD,
                               d_row * instrument.SKY_PIXEL_RAD, candidate.ra, candidate.dec)
    flux, flux_err = float(b[best] / a[best]), float(1.0 / np.sqrt(a[best]))
    # the grid is a sky image pointed at the candidate: its pixel scale near the centre
    radius = detection.error_radius_arcmin(
        flux / flux_err, row_err, col_err, row=instrument.SKY_CENTRE + d_row,
        col=instrument.SKY_CENTRE + d_col, systematic_arcmin=systematic_arcmin)
    return SourceRow(ra=float(ra), dec=float(dec), err_rad_arcmin=float(radius),
                     snr=float(candidate.snr), flux=flux, flux_err=flux_err,
                     row=float("nan"), col=float("nan"), pcode=float(candidate.pcode))


def distinct(rows, radius_deg: float = DUPLICATE_DEG) -> list:
    """Rows by decreasing SNR, without those within radius_deg of a brighter one (two
    candidates that converged on one source)."""
    kept = []
    for row in sorted(rows, key=lambda r: -r.snr):
        vector = instrument.radec_to_unit(row.ra, row.dec)
        if all(vector @ instrument.radec_to_unit(k.ra, k.dec) < np.cos(np.radians(radius_deg))
               for k in kept):
            kept.append(row)
    return kept


@dataclass(frozen=True)
class LightCurvePoint:
    """A source's flux in one observation (one band and occultation type)."""

    obs_id: str
    tstart: float
    tstop: float
    flux: float  # count s-1 cm-2
    flux_err: float
    exposure: float  # s: the good time x the partial coding at the source
    pcode: float


def forced_flux(rates: SkyRates, ra: float, dec: float, pcode_min: float):
    """(flux, flux_err, pcode) of the source at (ra, dec) in one image, measured in the image's
    own pixels (no resampling): the residual plus its restored source there (`alone`), at its
    exact sub-pixel position, fitted with the PSF held at the source's position. None when the
    image does not see it with at least pcode_min partial coding (or cannot measure it)."""
    x, y = _wcs_pixels(rates.wcs_keywords, np.array([ra]), np.array([dec]))
    x, y = float(x[0]), float(y[0])
    n_rows, n_cols = np.shape(rates.residual)
    if not (np.isfinite(x) and np.isfinite(y) and 0 <= round(y) < n_rows
            and 0 <= round(x) < n_cols):
        return None
    pcode = float(rates.pcode[int(round(y)), int(round(x))])
    if not pcode >= pcode_min:
        return None
    window = image_window(alone(rates, ra, dec), int(round(y)), int(round(x)), FIT_HALF + 1)
    if window is None:
        return None
    sky, top, left = window
    measured = detection.amplitude_at(sky, y - top, x - left, FIT_HALF)
    if measured is None:
        return None
    return float(measured[0]), float(measured[1]), pcode


def image_window(rates: SkyRates, row0: int, col0: int, half: int):
    """(SkyImages of the window of an image around pixel (row0, col0), its first row, its first
    column): the residual with the image's restored sources at their exact sub-pixel positions
    (the PSF in the image's own pixels, as IMAG measured them)."""
    n_rows, n_cols = np.shape(rates.residual)
    top, left = max(0, row0 - half), max(0, col0 - half)
    bottom, right = min(n_rows, row0 + half + 1), min(n_cols, col0 + half + 1)
    if bottom - top < 2 or right - left < 2:
        return None
    rows, cols = np.mgrid[top:bottom, left:right]
    intensity = np.array(rates.residual[top:bottom, left:right], dtype=float)
    if rates.sources:
        ra = np.array([s.ra for s in rates.sources])
        dec = np.array([s.dec for s in rates.sources])
        x, y = _wcs_pixels(rates.wcs_keywords, ra, dec)
        for source, xs, ys in zip(rates.sources, x, y):
            if np.isfinite(xs) and abs(ys - row0) < half + BEAM_REACH_PIXELS \
                    and abs(xs - col0) < half + BEAM_REACH_PIXELS:
                intensity += source.flux * detection.separable_psf(rows - ys, cols - xs)
    variance = np.array(rates.variance[top:bottom, left:right], dtype=float)
    variance = np.where(np.isfinite(variance) & (variance > 0), variance, np.inf)
    snr = np.where(np.isfinite(variance), intensity / np.sqrt(variance), 0.0)
    pcode = np.array(rates.pcode[top:bottom, left:right], dtype=float)
    return imaging.SkyImages(intensity, variance, snr, pcode), top, left


def weighted_flux(points) -> tuple[float, float]:
    """(flux, flux_err) of a steady source from its light-curve points: the inverse-variance
    weighted mean of the single-observation fluxes, exactly what fitting the PSF amplitude to
    all the images at once gives."""
    flux = np.array([p.flux for p in points], dtype=float)
    error = np.array([p.flux_err for p in points], dtype=float)
    use = np.isfinite(flux) & np.isfinite(error) & (error > 0)
    if not use.any():
        return float("nan"), float("nan")
    weight = 1.0 / error[use] ** 2
    return float(np.sum(weight * flux[use]) / np.sum(weight)), float(1.0 / np.sqrt(weight.sum()))


def with_flux(row: SourceRow, points) -> SourceRow:
    """A refined source with FLUX and FLUX_ERR from its light curve."""
    flux, flux_err = weighted_flux(points)
    if not np.isfinite(flux_err):
        return row
    return replace(row, flux=flux, flux_err=flux_err)
