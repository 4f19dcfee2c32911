"""MOSA's sources: found on the mosaic, each refined with the instrument's PSF on a local
tangent-plane grid, and measured in every observation that saw it (docs/mosa.md).

1. Candidates: peaks of the all-sky mosaic's significance (mosaic.find_mosaic_sources).
2. Local grids: around each candidate, a (2 LOCAL_HALF + 1)^2 grid on the tangent plane at the
   candidate (rows north, columns east), one sky-image pixel (4.5 / 460 rad) apart: the sky
   image's own resolution. Each observation adds its image sampled there (the residual
   interpolated bilinearly, the restored sources at their exact offsets) to inverse-variance
   sums, MosaicSums, so the local grids of thousands of observations merge exactly as the
   all-sky tiles do (what Swift/BAT's batmosaic facets and INTEGRAL's mosaics are to their
   source fitting, batcelldetect and ii_skyimage).
3. Fit: the merged grid is a sky image pointed at the candidate, and detection.measure_source
   fits it as IMAG fits a single image: the instrument's PSF (detection.separable_psf) with a
   free sub-pixel position, amplitude and constant, by generalised least squares with the PSF
   as the noise correlation. Statistics, not the all-sky pixels, then limit the position;
   ERR_RAD is detection.error_radius_arcmin of the fitted errors with MOSAIC_SYSTEMATIC_ARCMIN
   in quadrature, FLUX the fitted amplitude (count s-1 cm-2).
4. Light curves: each source's flux in each observation that saw it, the amplitude of the same
   PSF held at the source's position in that observation's image alone
   (detection.amplitude_at: forced photometry, as the BAT transient monitor does).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.kernels import detection, imaging
from ecpi_beam.kernels.mosaic import (BEAM_REACH_PIXELS, PEAK_MERGE_DEG, MosaicSums, SkyRates,
                                      _wcs_pixels, inverse_gnomonic, point_sums, sample)
from ecpi_beam.kernels.sky_analysis import SourceRow

FIT_HALF = 5  # fit window half-width in sky pixels: IMAG's default win_dim
SEARCH_RADIUS = 2  # the fit starts from the grid's highest-SNR pixel within this of the centre
LOCAL_HALF = FIT_HALF + SEARCH_RADIUS + 1  # local grids are 17 x 17 sky pixels
# Systematic term of ERR_RAD on the mosaic, in quadrature with the fitted error: the residual
# scatter of the refined positions of bright sources (mosaic SNR 20-200) on simulated
# campaigns beyond their statistical errors (docs/mosa.md, tests/test_mosa_survey.py).
MOSAIC_SYSTEMATIC_ARCMIN = 1.0
DUPLICATE_DEG = 0.5 * PEAK_MERGE_DEG  # two refined candidates this close are one source


# ============================================================================================
# Local tangent-plane grids
# ============================================================================================
def local_grid(ra0: float, dec0: float, half: int = LOCAL_HALF):
    """(RA, Dec) of the (2 half + 1)^2 points of the grid at (ra0, dec0), row-major, rows
    north and columns east, one sky-image pixel apart on the tangent plane."""
    rows, cols = np.mgrid[-half:half + 1, -half:half + 1]
    return inverse_gnomonic(cols.ravel() * instrument.SKY_PIXEL_RAD,
                            rows.ravel() * instrument.SKY_PIXEL_RAD, ra0, dec0)


def local_sums(rates: SkyRates, ra0: float, dec0: float, pcode_min: float,
               half: int = LOCAL_HALF) -> MosaicSums | None:
    """One image's contribution to the local grid at (ra0, dec0); None when the image does not
    measure the grid's centre with at least pcode_min partial coding."""
    ra, dec = local_grid(ra0, dec0, half)
    f, v, w = sample(rates, ra, dec, interpolate=True)
    with np.errstate(invalid="ignore"):
        use = np.isfinite(v) & (w >= pcode_min)
    if not use[len(use) // 2]:
        return None
    index = np.flatnonzero(use)
    return point_sums(len(use), index, f[index], v[index], w[index], rates.exposure)


def local_sky(sums: MosaicSums) -> imaging.SkyImages:
    """The merged local grid as a sky image (intensity F, variance V, SNR, mean partial
    coding), square, centre at the candidate."""
    n = int(round(np.sqrt(len(sums.weight))))
    measured = sums.weight > 0
    weight = np.where(measured, sums.weight, 1.0)
    intensity = np.where(measured, sums.weighted_flux / weight, 0.0)
    variance = np.where(measured, 1.0 / weight, np.inf)
    snr = np.where(measured, sums.weighted_flux / np.sqrt(weight), 0.0)
    pcode = np.where(measured, sums.pcode / np.maximum(sums.ncontrib, 1.0), 0.0)
    return imaging.SkyImages(*(a.reshape(n, n) for a in (intensity, variance, snr, pcode)))


def _to_sky(ra0, dec0, half, row, col):
    """(RA, Dec) of a (fractional) grid position."""
    ra, dec = inverse_gnomonic((col - half) * instrument.SKY_PIXEL_RAD,
                               (row - half) * instrument.SKY_PIXEL_RAD, ra0, dec0)
    return float(ra), float(dec)


# ============================================================================================
# Refinement and light curves
# ============================================================================================
def refine(candidate: SourceRow, sums: MosaicSums | None,
           systematic_arcmin: float = MOSAIC_SYSTEMATIC_ARCMIN) -> SourceRow:
    """The candidate fitted on its merged local grid: position, ERR_RAD, SNR (fitted FLUX /
    FLUX_ERR), FLUX and FLUX_ERR from the fit; the candidate itself when the grid cannot be
    fitted (too few measured pixels)."""
    if sums is None:
        return candidate
    sky = local_sky(sums)
    half = sky.intensity.shape[0] // 2
    found = detection.measure_source(sky, half, half, -np.inf, FIT_HALF,
                                     search_radius=SEARCH_RADIUS)
    if found is None or not (np.isfinite(found.flux_err) and found.flux_err > 0):
        return candidate
    ra, dec = _to_sky(candidate.ra, candidate.dec, half, found.row, found.col)
    snr = found.flux / found.flux_err
    # the grid is a sky image pointed at the candidate: its pixel scale near the centre
    radius = detection.error_radius_arcmin(
        snr, found.row_err, found.col_err, row=instrument.SKY_CENTRE + found.row - half,
        col=instrument.SKY_CENTRE + found.col - half, systematic_arcmin=systematic_arcmin)
    return SourceRow(ra=ra, dec=dec, err_rad_arcmin=float(radius), snr=float(snr),
                     flux=float(found.flux), flux_err=float(found.flux_err),
                     row=float("nan"), col=float("nan"), pcode=float(found.pcode))


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
    own pixels (no resampling): the residual plus its restored sources, each at its exact
    sub-pixel position, fitted with the PSF held at the source's position. None when the
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
    window = image_window(rates, int(round(y)), int(round(x)), FIT_HALF + 1)
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
    """A refined source with FLUX, FLUX_ERR and SNR (= FLUX / FLUX_ERR) from its light curve."""
    flux, flux_err = weighted_flux(points)
    if not np.isfinite(flux_err):
        return row
    return replace(row, flux=flux, flux_err=flux_err, snr=flux / flux_err)
