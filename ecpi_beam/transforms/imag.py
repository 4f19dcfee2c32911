"""IMAG as Beam transforms: balanced-correlation sky images and source detection.

SCIENCE.md, Coded-mask imaging. The mask FFTs are prepared once per worker in DoFn.setup.
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb
from ecpi_beam.kernels import background, cleaning, detection, imaging

NAMESPACE = "ecpi.imag"


@dataclasses.dataclass(frozen=True)
class SkyProducts:
    """IMAG result for one (obs_id, band, occ) key."""

    images: imaging.SkyImages
    residual_snr: np.ndarray  # SNR once every found source's shadowgram is removed
    exposure: float
    wcs_keywords: dict
    sources: tuple  # of SourceRow


@dataclasses.dataclass(frozen=True)
class SourceRow:
    """One detected source: a row of ECL-SOP-IMA."""

    ra: float
    dec: float
    err_rad_arcmin: float
    snr: float
    flux: float  # counts s-1 cm-2 (on-axis equivalent, per open detector area)
    flux_err: float
    row: float  # 0-based sky-image pixel
    col: float
    pcode: float


def flat_fielded(products):
    """Background-corrected counts and their variance divided by the pixel efficiency.

    The balanced correlation assumes every open pixel sees n counts of a source; dividing by
    the efficiency restores that, and dead or noisy pixels get weight 0.
    """
    weights = (products.good_pixels & (products.efficiency > 0)).astype(float)
    efficiency = np.where(weights > 0, products.efficiency, 1.0)
    data = products.correction.corrected / efficiency
    variance = products.correction.variance / efficiency**2
    return data * weights, variance * weights, weights


def source_rows(found, quaternion, exposure):
    """Convert sub-pixel detections to RA/Dec rows with fluxes in counts s-1 cm-2."""
    rows = []
    scale = 1.0 / (max(exposure, 1e-9) * instrument.PIXEL_AREA_CM2)
    for det in found:
        ra, dec = instrument.los_to_radec(instrument.sky_pixel_to_los(det.row, det.col), quaternion)
        rows.append(SourceRow(
            ra=float(ra), dec=float(dec),
            err_rad_arcmin=float(detection.error_radius_arcmin(
                det.snr, det.row_err, det.col_err, row=det.row, col=det.col)),
            snr=float(det.snr), flux=float(det.flux * scale), flux_err=float(det.flux_err * scale),
            row=float(det.row), col=float(det.col), pcode=float(det.pcode)))
    return tuple(rows)


class MakeSkyImages(beam.DoFn):
    """Deconvolves each background-corrected detector image and detects sources in it."""

    def __init__(self, caldb_dir: str, imag_params):
        self._caldb_dir = caldb_dir
        self._params = imag_params
        self._images = Metrics.counter(NAMESPACE, "sky_images")
        self._sources = Metrics.counter(NAMESPACE, "sources_found")

    def setup(self):
        self._pattern = Caldb.open(self._caldb_dir).mask_pattern()
        self._plan = imaging.make_correlation_plan(instrument.resample_mask(self._pattern))
        self._irf_correction = imaging.irf_correction(self._params.irf_corr)
        pixcal = Caldb.open(self._caldb_dir).pixel_calibration()
        efficiency = np.where(pixcal.status == 0, pixcal.effic, 0.0)
        flat_fielded_template = np.divide(
            background.sky_illumination_template(self._pattern, efficiency), efficiency,
            out=np.zeros((instrument.N_PIX, instrument.N_PIX)), where=efficiency > 0)
        # background terms refitted with the sources when cleaning, per BUBE mode (flat-fielded)
        self._background_terms = {"shape": (np.ones_like(efficiency), flat_fielded_template)}

    def process(self, element, timelines):
        (obs_id, band, occ), products = element
        data, variance, weights = flat_fielded(products)
        sky = self._irf_correction(imaging.balanced_sky_image(self._plan, data, variance, weights))
        cleaned = cleaning.detect_and_clean(
            self._plan, self._pattern, data, variance, weights,
            snr_threshold=self._params.effective_snr_threshold, pcode_min=self._params.pcode_min,
            win_dim=self._params.win_dim, irf_correction=self._irf_correction,
            background_components=self._background_terms.get(
                products.mode, (np.ones((instrument.N_PIX, instrument.N_PIX)),)))
        found = cleaned.detections
        residual = imaging.balanced_sky_image(self._plan, cleaned.residual, variance, weights)
        quaternion = timelines[obs_id].reference_quaternion
        self._images.inc()
        self._sources.inc(len(found))
        yield (obs_id, band, occ), SkyProducts(
            images=sky, residual_snr=residual.snr, exposure=products.exposure,
            wcs_keywords=instrument.sky_wcs_keywords(quaternion),
            sources=source_rows(found, quaternion, products.exposure))


@dataclasses.dataclass(eq=False)
class Imag(beam.PTransform):
    """((obs_id, band, occ), DetectorProducts) -> ((obs_id, band, occ), SkyProducts)."""

    imag_params: object
    caldb_dir: str
    timelines: beam.PCollection

    def __post_init__(self):
        super().__init__()

    def expand(self, detector_products):
        return detector_products | "SkyImages" >> beam.ParDo(
            MakeSkyImages(self.caldb_dir, self.imag_params), beam.pvalue.AsDict(self.timelines))
