"""The error model of a detection: its 90 % error radius and its flux error, statistical and
systematic terms, calibrated on the project's simulator (docs/imaging.md, "Error model").

The statistical part is the exact covariance of the window fits (kernels/detection.py: each
sky pixel is a linear combination of independent detector pixels). What it leaves out was
measured on simulated fields with known truth (ecpi_beam.simu.fields, benchmarks/error_bars.py)
and is added here:

- near the threshold, the linearised covariance underrates the scatter of the position (the
  PSF is cusped and the peak was selected as the highest pixel of an upward fluctuation): the
  statistical sigma is scaled by sqrt(1 + (snr_knee / SNR)^2);
- the pixel grid: positions are fitted with the PSF interpolated between pixel centres, which
  is not the response of a source between them (a 4.0 mm pixel's shadow is sharper than the
  4.5 mm cells the image is made of); fitted positions are pulled towards pixel centres by up
  to 0.023 pixel, a systematic of `grid_pixels` (1 sigma per axis, sky pixels) in quadrature;
- attitude: the simulator holds each pointing exactly and the pipeline images it in that
  attitude, so the simulations show none; `attitude_arcmin` (90 %, default 0) is where a known
  attitude or alignment uncertainty is added for real data;
- flux: `flux_relative` x FLUX in quadrature, what the flux fit at a fitted (not the true)
  position and the thin-mask response model leave at high SNR.

    R90 = sqrt((2.146 scale sqrt(k(SNR)^2 sigma^2 + grid^2))^2 + attitude^2)
    FLUX_ERR = sqrt(sigma_flux^2 + (flux_relative FLUX)^2)

with sigma the rms of the two axis errors (sky pixels), scale the local angular size of a sky
pixel, 2.146 = sqrt(2 ln 10) the 90 % radius of a circular Gaussian of unit sigma per axis.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument

RADIUS_90_PER_SIGMA = float(np.sqrt(2.0 * np.log(10.0)))  # 2.146 for a circular 2-D Gaussian
# 1-sigma position error per axis times the SNR, in sky pixels: the median of the fitted
# errors on simulated fields (any partial coding), for positions without a fit (mosaics)
SIGMA_PIXELS_TIMES_SNR = 1.30


@dataclass(frozen=True)
class ErrorModel:
    """The terms beside the fit's statistical errors (see the module docstring)."""

    snr_knee: float = 4.5
    grid_pixels: float = 0.0175
    attitude_arcmin: float = 0.0
    flux_relative: float = 0.0

    def position_sigma_pixels(self, snr, row_err, col_err):
        """1-sigma position error per axis (sky pixels): the fit's, scaled near the
        threshold, with the pixel-grid term; from the SNR alone where the fit gave none."""
        snr = np.maximum(np.asarray(snr, dtype=float), 1e-9)
        sigma = np.sqrt(0.5 * (np.square(row_err) + np.square(col_err)))
        sigma = np.where(np.isfinite(sigma), sigma, SIGMA_PIXELS_TIMES_SNR / snr)
        inflation = 1.0 + np.square(self.snr_knee / snr)
        return np.sqrt(inflation * np.square(sigma) + self.grid_pixels**2)

    def error_radius_arcmin(self, snr, row_err, col_err, row=instrument.SKY_CENTRE,
                            col=instrument.SKY_CENTRE):
        """90 % error radius (arcmin) of a detection at sky-grid position (row, col)."""
        statistical = (RADIUS_90_PER_SIGMA * self.position_sigma_pixels(snr, row_err, col_err)
                       * local_pixel_scale_arcmin(row, col))
        return np.hypot(statistical, self.attitude_arcmin)

    def flux_error(self, flux, flux_err):
        """FLUX_ERR: the fit's error with the relative systematic in quadrature."""
        return np.hypot(flux_err, self.flux_relative * np.abs(flux))

    def keywords(self) -> dict:
        """FITS keywords naming the terms (ECL-SOP-IMA SOURCES header, docs/products.md)."""
        return {
            "ERRKNEE": (self.snr_knee, "position sigma x sqrt(1 + (ERRKNEE/SNR)^2)"),
            "ERRGRID": (self.grid_pixels, "[pixel] pixel-grid systematic, 1 sigma per axis"),
            "ERRATT": (self.attitude_arcmin, "[arcmin] attitude systematic, 90 %"),
            "FLUXSYS": (self.flux_relative, "relative flux systematic in FLUX_ERR"),
        }


ERROR_MODEL = ErrorModel()  # calibrated on the simulator (docs/imaging.md)


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
