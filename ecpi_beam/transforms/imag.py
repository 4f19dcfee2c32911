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
from ecpi_beam.kernels import imaging
from ecpi_beam.kernels.sky_analysis import SkyAnalyser, source_rows
from ecpi_beam.transforms.base import DataclassTransform
from ecpi_beam.transforms.failures import isolating, with_failure_log

NAMESPACE = "ecpi.imag"


@dataclasses.dataclass(frozen=True)
class SkyProducts:
    """IMAG result for one (obs_id, band, occ) key."""

    images: imaging.SkyImages
    residual_snr: np.ndarray  # SNR once every found source's shadowgram is removed
    exposure: float
    wcs_keywords: dict
    sources: tuple  # of kernels.sky_analysis.SourceRow


class MakeSkyImages(beam.DoFn):
    """Deconvolves each background-corrected detector image and detects sources in it."""

    def __init__(self, caldb_dir: str, imag_params):
        self._caldb_dir = caldb_dir
        self._params = imag_params
        self._images = Metrics.counter(NAMESPACE, "sky_images")
        self._sources = Metrics.counter(NAMESPACE, "sources_found")

    def setup(self):
        caldb = Caldb.open(self._caldb_dir)
        self._analyser = SkyAnalyser(caldb.mask_pattern(), caldb.pixel_calibration(), self._params,
                                     irf=caldb.irf(), arf=caldb.arf())

    @isolating("imag")
    def process(self, element, timelines):
        (obs_id, band, occ), products = element
        analysis = self._analyser.analyse(
            products.correction.corrected, products.correction.variance, products.good_pixels,
            products.efficiency, products.mode, band=band)
        quaternion = timelines[obs_id].reference_quaternion
        self._images.inc()
        self._sources.inc(len(analysis.detections))
        yield (obs_id, band, occ), SkyProducts(
            images=analysis.images, residual_snr=analysis.residual_snr,
            exposure=products.exposure, wcs_keywords=instrument.sky_wcs_keywords(quaternion),
            sources=source_rows(analysis.detections, quaternion, products.exposure))


@dataclasses.dataclass(eq=False)
class Imag(DataclassTransform):
    """((obs_id, band, occ), DetectorProducts) -> ((obs_id, band, occ), SkyProducts)."""

    imag_params: object
    caldb_dir: str
    timelines: beam.PCollection
    failure_log: object = None  # failures.FailureLog

    def expand(self, detector_products):
        return detector_products | "SkyImages" >> beam.ParDo(
            with_failure_log(MakeSkyImages(self.caldb_dir, self.imag_params), self.failure_log),
            beam.pvalue.AsDict(self.timelines))
