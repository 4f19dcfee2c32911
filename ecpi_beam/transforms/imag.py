"""IMAG as Beam transforms: balanced-correlation sky images, source detection, and one
catalogue per observation (the detections of all its bands and occultation types associated,
matched to the known sources, NEW flagged).

docs/science.md, "Coded-mask imaging". The mask FFTs are prepared once per worker in
DoFn.setup.
"""
from __future__ import annotations

import dataclasses
import logging

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb
from ecpi_beam.io.image_products import parse_band
from ecpi_beam.io.products import pointing_index
from ecpi_beam.kernels import catalogue, cleaning, imaging
from ecpi_beam.kernels.sky_analysis import SkyAnalyser, source_rows
from ecpi_beam.transforms.base import (DataclassTransform, grouped_by_observation, image_key,
                                      image_key_parts, pointing_name, worker_state)
from ecpi_beam.transforms.failures import isolating, with_failure_log

NAMESPACE = "ecpi.imag"
LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SkyProducts:
    """IMAG result for one image key (obs_id, band, occ[, pointing])."""

    images: imaging.SkyImages
    residual_snr: np.ndarray  # SNR once every found source's shadowgram is removed
    exposure: float
    wcs_keywords: dict
    sources: tuple  # of kernels.sky_analysis.SourceRow
    irf_corr: str = ""  # the [imag] irf_corr the intensity and fluxes were divided by
    irf_spectrum: str = ""  # its spectral assumption ('irf' only)
    cleaning_limit_reached: bool = False  # cleaning.MAX_CLEANED_SOURCES stopped the cleaning
    catalogue: object = None  # kernels.catalogue.ObservationCatalogue of the whole observation
    pointing: object = None  # kernels.timeline.Pointing of the image, when there are several


def _sky_analyser(caldb, imag_params) -> SkyAnalyser:
    return SkyAnalyser(caldb.mask_pattern(), caldb.pixel_calibration(), imag_params,
                       irf=caldb.irf(), arf=caldb.arf())


class _Imaging:
    """The per-key imaging both DoFns do: IMAG's kernels on one DetectorProducts, counted."""

    def _count_imaging(self):
        self._images = Metrics.counter(NAMESPACE, "sky_images")
        self._detections = Metrics.counter(NAMESPACE, "detections")
        self._limit = Metrics.counter(NAMESPACE, "cleaning_limit_reached")

    def _set_up_analyser(self):
        self._analyser = worker_state(_sky_analyser, Caldb.open(self._caldb_dir), self._params)

    def _sky_products(self, obs_id, band, occ, products, timeline) -> SkyProducts:
        """`timeline`: the observation's ImagingTimeline; the image's pointing is the one
        its DetectorProducts were made on."""
        pointing = pointing_index(products)
        analysis = self._analyser.analyse(
            products.correction.corrected, products.correction.variance, products.good_pixels,
            products.efficiency, products.mode, band=band,
            model_terms=products.correction.terms)
        quaternion = timeline.for_pointing(pointing).reference_quaternion
        self._images.inc()
        self._detections.inc(len(analysis.detections))
        image = f"{obs_id} {band} {occ}{pointing_name(pointing)}"
        LOG.info("IMAG %s: %d detection(s), peak SNR %.1f", image, len(analysis.detections),
                 float(np.max(analysis.images.snr)))
        if analysis.cleaning_limit_reached:
            self._limit.inc()
            LOG.warning(
                "%s: cleaning stopped at its safety limit of %d sources; fainter sources "
                "may be missing", image, cleaning.MAX_CLEANED_SOURCES)
        return SkyProducts(
            images=analysis.images, residual_snr=analysis.residual_snr,
            exposure=products.exposure, wcs_keywords=instrument.sky_wcs_keywords(quaternion),
            sources=source_rows(analysis.detections, quaternion, products.exposure),
            irf_corr=analysis.irf_correction.name, irf_spectrum=analysis.irf_correction.spectrum,
            cleaning_limit_reached=analysis.cleaning_limit_reached,
            pointing=getattr(products, "pointing", None))


class MakeSkyImages(_Imaging, beam.DoFn):
    """Deconvolves each background-corrected detector image and detects sources in it
    (one key at a time: the streaming windows' imaging)."""

    def __init__(self, caldb_dir: str, imag_params):
        self._caldb_dir = caldb_dir
        self._params = imag_params
        self._count_imaging()

    def setup(self):
        self._set_up_analyser()

    @isolating("imag")
    def process(self, element, timelines):
        key, products = element
        obs_id, band, occ, _ = image_key_parts(key)
        yield key, self._sky_products(obs_id, band, occ, products, timelines[obs_id])


SKY_IMAGE_STEP = "MakeSkyImages"  # the progress marks of the sky images (progress.py)


class ImageObservation(_Imaging, beam.DoFn):
    """(obs_id, [(band, occ, DetectorProducts)]) -> (obs_id, [(band, occ, SkyProducts)]): the
    sky images of an observation, and its catalogue (the detections of every band,
    occultation type and pointing associated, matched to the known sources), which each SkyProducts
    carries; its per-band sources gain their catalogue name.

    An observation at a time, on one worker: its sky images never cross a stage boundary
    before the catalogue, and nothing groups them again."""

    def __init__(self, caldb_dir: str, imag_params):
        self._caldb_dir = caldb_dir
        self._params = imag_params
        self._count_imaging()
        self._sources = Metrics.counter(NAMESPACE, "sources_found")
        self._new = Metrics.counter(NAMESPACE, "new_sources")

    def setup(self):
        self._set_up_analyser()
        self._known = Caldb.open(self._caldb_dir).known_sources()

    @isolating("imag")
    def process(self, element, timelines):
        obs_id, detector = element
        marks = getattr(getattr(self, "failure_log", None), "progress", None)
        entries = []
        for band, occ, products in sorted(detector, key=lambda e: (
                pointing_index(e[2]), parse_band(e[0]), e[1])):
            entries.append((band, occ, self._sky_products(obs_id, band, occ, products,
                                                          timelines[obs_id])))
            if marks is not None:  # a sky image done, for the progress line
                marks.mark(SKY_IMAGE_STEP)
        result = catalogue.build_catalogue(
            [(band, occ, sky.sources, pointing_index(sky)) for band, occ, sky in entries],
            self._known, bands=sorted({band for band, _, _ in entries}, key=parse_band))
        self._sources.inc(len(result.sources))
        self._new.inc(result.n_new)
        yield obs_id, [(band, occ, dataclasses.replace(sky, catalogue=result))
                       for band, occ, sky in entries]


@dataclasses.dataclass(eq=False)
class Imag(DataclassTransform):
    """((obs_id, band, occ[, pointing]), DetectorProducts) -> the same keys, SkyProducts.

    Once applied, `by_observation` holds the same results as (obs_id, [(band, occ,
    SkyProducts)]), with the catalogue: the per-observation writers take it as it is.
    `grouped`: the input is already (obs_id, [(band, occ, DetectorProducts)]) (grouped once
    for the detector products' writers too).
    """

    imag_params: object
    caldb_dir: str
    timelines: beam.PCollection
    failure_log: object = None  # failures.FailureLog
    grouped: bool = False
    by_observation: beam.PCollection = dataclasses.field(default=None, init=False)

    def expand(self, detector):
        detector_by_observation = detector if self.grouped else grouped_by_observation(detector)
        self.by_observation = detector_by_observation | "SkyImages" >> beam.ParDo(
            with_failure_log(ImageObservation(self.caldb_dir, self.imag_params),
                             self.failure_log),
            beam.pvalue.AsDict(self.timelines))
        return self.by_observation | "PerKey" >> beam.FlatMapTuple(
            lambda obs_id, entries: [(image_key(obs_id, band, occ, pointing_index(sky)), sky)
                                     for band, occ, sky in entries])
