"""IMAG for one background-corrected detector image, without Beam (docs/science.md, coded-mask imaging).

Flat-field, balanced cross-correlation, IRF correction, detection with iterative cleaning, and
the conversion of detections to catalogue rows (RA, Dec, error radius, flux). The Beam transform
(transforms/imag.py) and the bare-numpy benchmark both call this, so they do the same science.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.kernels import background, cleaning, detection, error_model, imaging


@dataclass(frozen=True)
class SourceRow:
    """One detected source: a row of ECL-SOP-IMA."""

    ra: float
    dec: float
    err_rad_arcmin: float
    snr: float
    flux: float  # counts s-1 cm-2 per open detector area (on-axis equivalent with cos_theta/irf)
    flux_err: float
    row: float  # 0-based sky-image pixel
    col: float
    pcode: float


@dataclass(frozen=True)
class SkyAnalysis:
    images: imaging.SkyImages
    residual_snr: np.ndarray  # SNR once every found source's shadowgram is removed
    detections: tuple  # of detection.Detection, brightest first, fluxes irf-corrected
    cleaning_limit_reached: bool = False  # cleaning.MAX_CLEANED_SOURCES stopped the cleaning
    irf_correction: imaging.IrfCorrection | None = None  # what the fluxes were divided by


def flat_fielded(corrected, variance, good_pixels, efficiency):
    """Background-corrected counts and their variance divided by the pixel efficiency.

    The balanced correlation assumes every open pixel sees n counts of a source; dividing by
    the efficiency restores that; dead or noisy pixels get weight 0.
    """
    weights = (np.asarray(good_pixels) & (np.asarray(efficiency) > 0)).astype(float)
    efficiency = np.where(weights > 0, efficiency, 1.0)
    return corrected / efficiency * weights, variance / efficiency**2 * weights, weights


def source_rows(detections, quaternion, exposure, model=error_model.ERROR_MODEL) -> tuple:
    """Sub-pixel detections -> catalogue rows in RA/Dec with fluxes in counts s-1 cm-2, the
    90 % error radius and the flux error of the error model (kernels/error_model.py)."""
    scale = 1.0 / (max(exposure, 1e-9) * instrument.PIXEL_AREA_CM2)
    rows = []
    for det in detections:
        ra, dec = instrument.los_to_radec(instrument.sky_pixel_to_los(det.row, det.col), quaternion)
        rows.append(SourceRow(
            ra=float(ra), dec=float(dec),
            err_rad_arcmin=float(model.error_radius_arcmin(det.snr, det.row_err, det.col_err,
                                                           det.row, det.col)),
            snr=float(det.snr), flux=float(det.flux * scale),
            flux_err=float(model.flux_error(det.flux, det.flux_err) * scale),
            row=float(det.row), col=float(det.col), pcode=float(det.pcode)))
    return tuple(rows)


def irf_corrected(detections, correction: imaging.IrfCorrection) -> tuple:
    """Fluxes and errors divided by the response at each source's fitted position."""
    corrected = []
    for det in detections:
        factor = correction.factor_at(det.row, det.col)
        corrected.append(replace(det, flux=det.flux / factor, flux_err=det.flux_err / factor))
    return tuple(corrected)


class SkyAnalyser:
    """Everything that depends only on the CALDB and [imag] parameters, prepared once.

    `irf` and `arf` (CALDB ECL-RSP-IRF and ECL-RSP-ARF) are needed for irf_corr = 'irf'.
    """

    def __init__(self, pattern, pixel_calibration, imag_params, irf=None, arf=None):
        self.pattern = np.asarray(pattern)
        self.plan = imaging.make_correlation_plan(instrument.resample_mask(self.pattern))
        self.irf_corr, self._irf, self._arf = imag_params.irf_corr, irf, arf
        imaging.check_irf_correction(self.irf_corr)
        self._corrections = {}
        self.find = dict(snr_threshold=imag_params.effective_snr_threshold,
                         pcode_min=imag_params.pcode_min, win_dim=imag_params.win_dim)
        efficiency = pixel_calibration.imaging_efficiency
        template = background.sky_illumination_template(self.pattern, efficiency)
        constant = np.ones(efficiency.shape)
        # the background terms of each BUBE mode, flat-fielded, refitted with the sources
        self.background_terms = {
            "shape": (constant, np.divide(template, efficiency, out=np.zeros(efficiency.shape),
                                          where=efficiency > 0)),
        }
        self.default_terms = (constant,)

    def irf_correction(self, band=None) -> imaging.IrfCorrection:
        """The irf_corr for a PI band (lo, hi) or '13-60' (only 'irf' depends on the band)."""
        if isinstance(band, str):
            band = tuple(int(part) for part in band.split("-"))
        key = band if self.irf_corr == "irf" else None
        if key not in self._corrections:
            energy_range = None if band is None else instrument.band_energy_range(band)
            self._corrections[key] = imaging.irf_correction(
                self.irf_corr, irf=self._irf, arf=self._arf, energy_range_kev=energy_range)
        return self._corrections[key]

    def cleaning_terms(self, mode, efficiency, model_terms=None) -> tuple:
        """The background terms refitted with the sources, flat-fielded.

        model_terms: the BUBE fit's own term images in counts (BackgroundResult.terms); when
        given, these are the terms: a bright source biased every term of the fit made without
        it (the CXB and Earth templates of the physics modes too), and a biased term left
        unrefitted images as broad structure whose peaks are detected as sources.
        """
        images = [np.asarray(term, dtype=float) for term in (model_terms or {}).values()]
        images = [term for term in images if np.any(term != 0)]
        if not images:
            return self.background_terms.get(mode, self.default_terms)
        efficiency = np.asarray(efficiency, dtype=float)
        return tuple(np.divide(term, efficiency, out=np.zeros(efficiency.shape),
                               where=efficiency > 0) for term in images)

    def analyse(self, corrected, variance, good_pixels, efficiency, mode,
                band=None, model_terms=None) -> SkyAnalysis:
        """`band`: the PI band (lo, hi) or its name, needed with irf_corr = 'irf'.
        `model_terms`: the background fit's term images in counts (BackgroundResult.terms),
        refitted with the sources; without them, the terms of `mode`'s table entry."""
        correction = self.irf_correction(band)
        data, data_variance, weights = flat_fielded(corrected, variance, good_pixels, efficiency)
        # detection and the flux fit run on the uncorrected image (the SNR is the same); the
        # fluxes are then divided by the response at each source's own position
        cleaned = cleaning.detect_and_clean(
            self.plan, self.pattern, data, data_variance, weights,
            background_components=self.cleaning_terms(mode, efficiency, model_terms),
            **self.find)
        return SkyAnalysis(correction(cleaned.sky), cleaned.residual_sky.snr,
                           irf_corrected(cleaned.detections, correction),
                           cleaned.limit_reached, correction)


def restored_snr(residual_snr, rows, cols, snrs, half_window: int = 8) -> np.ndarray:
    """The cleaned SNR image with each detected source put back as a clean PSF of its SNR (the
    restoring step of CLEAN, in SNR units): what a coded-mask quick-look shows. The noise is as
    it is (unit standard deviation), the sources are where they were found, and the coding
    noise and side lobes of the bright ones, which make a raw SNR image look full of sources,
    are gone. rows, cols: 0-based sky pixels of the sources (sub-pixel); the PSF (the analytic
    one of the detection) is scaled so that the source's brightest pixel holds its SNR."""
    image = np.array(residual_snr, dtype=float)
    n_rows, n_cols = image.shape
    for row, col, snr in zip(rows, cols, snrs):
        if not (np.isfinite(row) and np.isfinite(col)):
            continue
        row0, col0 = int(round(row)), int(round(col))
        near_rows = slice(max(0, row0 - half_window), min(n_rows, row0 + half_window + 1))
        near_cols = slice(max(0, col0 - half_window), min(n_cols, col0 + half_window + 1))
        grid_rows, grid_cols = np.mgrid[near_rows, near_cols]
        psf = detection.separable_psf(grid_rows - row, grid_cols - col)
        if psf.max() > 0:  # its brightest pixel at its SNR, as in the SNR image
            image[grid_rows, grid_cols] += float(snr) * psf / psf.max()
    return image
