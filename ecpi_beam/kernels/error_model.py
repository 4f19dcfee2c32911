"""The error model of a detection: its 90 % error radius (ERR_RAD) and its flux error
(FLUX_ERR), statistical and systematic terms, calibrated on the project's simulator
(docs/imaging.md, "Error model").

The statistical part is the exact covariance of the window fits (kernels/detection.py: each
sky pixel a linear combination of independent detector pixels). What it leaves out was measured
on simulated fields with known truth (ecpi_beam.simu.fields, simu.scoring, benchmarks/
error_bars.py) and is added here, each term a field of ErrorModel:

- position_scale: the covariance is that of one source alone on a known background; the
  background terms and the other sources are fitted from the same counts (cleaning), which
  adds their errors: the position scatter is this factor times the fit's sigma;
- snr_knee: near the threshold the linearised covariance underrates the scatter (the response
  is cusped, and the peak was selected as the highest pixel of an upward fluctuation): the
  sigma is further scaled by sqrt(1 + (snr_knee / SNR)^2);
- grid_pixels: a floor per axis (sky pixels) for what the response model cannot place. The
  PSF interpolated between pixel centres pulled positions towards them by up to 0.025 pixel;
  positions refined with the exact response have no such bias, and the simulations need
  hardly any floor (0.0025 pixel, 0.08 arcmin on axis);
- attitude_arcmin: 90 %, in quadrature with the radius. The simulator holds each pointing
  exactly and the pipeline images it in that attitude: 0 here; a known attitude or alignment
  uncertainty of real data goes here (ECLAIRs' flight radii add 2 arcmin, GCN 41243, 44181);
- flux_scale, flux_relative: FLUX_ERR = sqrt((flux_scale sigma_flux)^2 + (flux_relative
  FLUX)^2), the same coupling as position_scale, and a relative systematic that the
  simulations (SNR up to 1000) do not need (0).

    sigma = sqrt(position_scale^2 (1 + (snr_knee / SNR)^2) sigma_fit^2 + grid_pixels^2)
    ERR_RAD = sqrt((2.146 sigma scale(row, col))^2 + attitude_arcmin^2)

sigma_fit is the rms of the two axis errors (sky pixels), scale(row, col) the local angular
size of a sky pixel (33.6 arcmin x cos^1.5 of the off-axis angle), 2.146 = sqrt(2 ln 10) the
90 % radius of a circular Gaussian of unit sigma per axis.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument

RADIUS_90_PER_SIGMA = float(np.sqrt(2.0 * np.log(10.0)))  # 2.146 for a circular 2-D Gaussian
# 1-sigma position error per axis times the SNR, in sky pixels: the median of the fits' errors
# on simulated fields (1.08-1.37 from the 10th to the 90th percentile, at any partial coding
# and SNR), for a position without a fit (a mosaic peak)
SIGMA_PIXELS_TIMES_SNR = 1.21


@dataclass(frozen=True)
class ErrorModel:
    """The terms beside the fit's statistical errors (see the module docstring)."""

    position_scale: float = 1.0
    snr_knee: float = 0.0
    grid_pixels: float = 0.0
    attitude_arcmin: float = 0.0
    flux_scale: float = 1.0
    flux_relative: float = 0.0

    def position_sigma_pixels(self, snr, row_err, col_err):
        """1-sigma position error per axis (sky pixels): the fit's, scaled (and more near the
        threshold), with the pixel-grid term; from the SNR alone where the fit gave none."""
        snr = np.maximum(np.asarray(snr, dtype=float), 1e-9)
        sigma = np.sqrt(0.5 * (np.square(row_err) + np.square(col_err)))
        sigma = np.where(np.isfinite(sigma), sigma, SIGMA_PIXELS_TIMES_SNR / snr)
        stretch = self.position_scale**2 * (1.0 + np.square(self.snr_knee / snr))
        return np.sqrt(stretch * np.square(sigma) + self.grid_pixels**2)

    def error_radius_arcmin(self, snr, row_err, col_err, row=instrument.SKY_CENTRE,
                            col=instrument.SKY_CENTRE):
        """90 % error radius (arcmin) of a detection at sky-grid position (row, col)."""
        statistical = (RADIUS_90_PER_SIGMA * self.position_sigma_pixels(snr, row_err, col_err)
                       * local_pixel_scale_arcmin(row, col))
        return np.hypot(statistical, self.attitude_arcmin)

    def flux_error(self, flux, flux_err):
        """FLUX_ERR: the fit's error, scaled, with the relative systematic in quadrature."""
        return np.hypot(self.flux_scale * np.asarray(flux_err, dtype=float),
                        self.flux_relative * np.abs(flux))

    def keywords(self) -> dict:
        """FITS keywords naming the terms (ECL-SOP-IMA headers, docs/products.md)."""
        return {
            "ERRSCALE": (self.position_scale, "position sigma = ERRSCALE x fit's"),
            "ERRKNEE": (self.snr_knee, "... x sqrt(1 + (ERRKNEE/SNR)^2)"),
            "ERRGRID": (self.grid_pixels, "[pixel] + grid systematic in quadrature"),
            "ERRATT": (self.attitude_arcmin, "[arcmin] + attitude systematic (90 %)"),
            "FLXSCALE": (self.flux_scale, "FLUX_ERR = FLXSCALE x fit's error"),
            "FLUXSYS": (self.flux_relative, "... + FLUXSYS x FLUX in quadrature"),
        }


# fitted on 2556 simulated sources (docs/imaging.md, "Error model": benchmarks/error_bars.py
# --path kernels --calibrate --seed 26 ...), verified on others (tests/test_error_model.py,
# and through the whole pipeline)
ERROR_MODEL = ErrorModel(position_scale=1.08, snr_knee=4.0, grid_pixels=0.0025,
                         attitude_arcmin=0.0, flux_scale=1.03, flux_relative=0.0)


def local_pixel_scale_arcmin(row=instrument.SKY_CENTRE, col=instrument.SKY_CENTRE):
    """Angular size of a sky pixel at (row, col): sqrt of its solid angle (TAN grid: the pixel
    shrinks as cos^2 radially and cos tangentially)."""
    cos_theta = instrument.sky_pixel_to_los(row, col)[..., 0]
    return instrument.SKY_PIXEL_DEG * 60.0 * cos_theta**1.5


def error_radius_arcmin(snr, row_err, col_err, row=instrument.SKY_CENTRE,
                        col=instrument.SKY_CENTRE, model: ErrorModel = ERROR_MODEL):
    """90 % error radius (arcmin) from the fit's 1-sigma axis errors (sky pixels) and the SNR,
    with the systematic terms of `model`. NaN errors (no fit, e.g. a mosaic peak): the
    statistical sigma is SIGMA_PIXELS_TIMES_SNR / SNR."""
    return model.error_radius_arcmin(snr, row_err, col_err, row, col)


def flux_error(flux, flux_err, model: ErrorModel = ERROR_MODEL):
    """FLUX_ERR with the relative systematic of `model` (any unit: flux and flux_err alike)."""
    return model.flux_error(flux, flux_err)
