"""IMAG for one background-corrected detector image, without Beam (SCIENCE.md, coded-mask imaging).

Flat-field, balanced cross-correlation, IRF correction, detection with iterative cleaning, and
the conversion of detections to catalogue rows (RA, Dec, error radius, flux). The Beam transform
(transforms/imag.py) and the bare-numpy benchmark both call this, so they do the same science.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.kernels import background, cleaning, detection, imaging


@dataclass(frozen=True)
class SourceRow:
    """One detected source: a row of ECL-SOP-IMA."""

    ra: float
    dec: float
    err_rad_arcmin: float
    snr: float
    flux: float  # counts s-1 cm-2 (on-axis equivalent with cos_theta, per open detector area)
    flux_err: float
    row: float  # 0-based sky-image pixel
    col: float
    pcode: float


@dataclass(frozen=True)
class SkyAnalysis:
    images: imaging.SkyImages
    residual_snr: np.ndarray  # SNR once every found source's shadowgram is removed
    detections: tuple  # of detection.Detection, brightest first


def flat_fielded(corrected, variance, good_pixels, efficiency):
    """Background-corrected counts and their variance divided by the pixel efficiency.

    The balanced correlation assumes every open pixel sees n counts of a source; dividing by
    the efficiency restores that; dead or noisy pixels get weight 0.
    """
    weights = (np.asarray(good_pixels) & (np.asarray(efficiency) > 0)).astype(float)
    efficiency = np.where(weights > 0, efficiency, 1.0)
    return corrected / efficiency * weights, variance / efficiency**2 * weights, weights


def source_rows(detections, quaternion, exposure) -> tuple:
    """Sub-pixel detections -> catalogue rows in RA/Dec with fluxes in counts s-1 cm-2."""
    scale = 1.0 / (max(exposure, 1e-9) * instrument.PIXEL_AREA_CM2)
    rows = []
    for det in detections:
        ra, dec = instrument.los_to_radec(instrument.sky_pixel_to_los(det.row, det.col), quaternion)
        rows.append(SourceRow(
            ra=float(ra), dec=float(dec),
            err_rad_arcmin=float(detection.error_radius_arcmin(
                det.snr, det.row_err, det.col_err, row=det.row, col=det.col)),
            snr=float(det.snr), flux=float(det.flux * scale), flux_err=float(det.flux_err * scale),
            row=float(det.row), col=float(det.col), pcode=float(det.pcode)))
    return tuple(rows)


class SkyAnalyser:
    """Everything that depends only on the CALDB and [imag] parameters, prepared once."""

    def __init__(self, pattern, pixel_calibration, imag_params):
        self.pattern = np.asarray(pattern)
        self.plan = imaging.make_correlation_plan(instrument.resample_mask(self.pattern))
        self.irf_correction = imaging.irf_correction(imag_params.irf_corr)
        self.find = dict(snr_threshold=imag_params.effective_snr_threshold,
                         pcode_min=imag_params.pcode_min, win_dim=imag_params.win_dim)
        efficiency = np.where(pixel_calibration.status == 0, pixel_calibration.effic, 0.0)
        template = background.sky_illumination_template(self.pattern, efficiency)
        constant = np.ones(efficiency.shape)
        # the background terms of each BUBE mode, flat-fielded, refitted with the sources
        self.background_terms = {
            "shape": (constant, np.divide(template, efficiency, out=np.zeros(efficiency.shape),
                                          where=efficiency > 0)),
        }
        self.default_terms = (constant,)

    def analyse(self, corrected, variance, good_pixels, efficiency, mode) -> SkyAnalysis:
        data, data_variance, weights = flat_fielded(corrected, variance, good_pixels, efficiency)
        sky = self.irf_correction(
            imaging.balanced_sky_image(self.plan, data, data_variance, weights))
        cleaned = cleaning.detect_and_clean(
            self.plan, self.pattern, data, data_variance, weights,
            irf_correction=self.irf_correction,
            background_components=self.background_terms.get(mode, self.default_terms), **self.find)
        residual = imaging.balanced_sky_image(self.plan, cleaned.residual, data_variance, weights)
        return SkyAnalysis(sky, residual.snr, cleaned.detections)
