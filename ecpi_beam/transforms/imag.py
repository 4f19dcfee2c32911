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
from ecpi_beam.kernels import catalogue, cleaning, imaging
from ecpi_beam.kernels.sky_analysis import SkyAnalyser, source_rows
from ecpi_beam.transforms.base import DataclassTransform, grouped_by_observation, worker_state
from ecpi_beam.transforms.failures import isolating, with_failure_log

NAMESPACE = "ecpi.imag"
LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SkyProducts:
    """IMAG result for one (obs_id, band, occ) key."""

    images: imaging.SkyImages
    residual_snr: np.ndarray  # SNR once every found source's shadowgram is removed
    exposure: float
    wcs_keywords: dict
    sources: tuple  # of kernels.sky_analysis.SourceRow
    irf_corr: str = ""  # the [imag] irf_corr the intensity and fluxes were divided by
    irf_spectrum: str = ""  # its spectral assumption ('irf' only)
    cleaning_limit_reached: bool = False  # cleaning.MAX_CLEANED_SOURCES stopped the cleaning
    catalogue: object = None  # kernels.catalogue.ObservationCatalogue of the whole observation


def _sky_analyser(caldb, imag_params) -> SkyAnalyser:
    return SkyAnalyser(caldb.mask_pattern(), caldb.pixel_calibration(), imag_params,
                       irf=caldb.irf(), arf=caldb.arf())


class MakeSkyImages(beam.DoFn):
    """Deconvolves each background-corrected detector image and detects sources in it."""

    def __init__(self, caldb_dir: str, imag_params):
        self._caldb_dir = caldb_dir
        self._params = imag_params
        self._images = Metrics.counter(NAMESPACE, "sky_images")
        self._detections = Metrics.counter(NAMESPACE, "detections")
        self._limit = Metrics.counter(NAMESPACE, "cleaning_limit_reached")

    def setup(self):
        self._analyser = worker_state(_sky_analyser, Caldb.open(self._caldb_dir), self._params)

    @isolating("imag")
    def process(self, element, timelines):
        (obs_id, band, occ), products = element
        analysis = self._analyser.analyse(
            products.correction.corrected, products.correction.variance, products.good_pixels,
            products.efficiency, products.mode, band=band,
            model_terms=products.correction.terms)
        quaternion = timelines[obs_id].reference_quaternion
        self._images.inc()
        self._detections.inc(len(analysis.detections))
        LOG.info("IMAG %s %s %s: %d detection(s), peak SNR %.1f", obs_id, band, occ,
                 len(analysis.detections), float(np.max(analysis.images.snr)))
        if analysis.cleaning_limit_reached:
            self._limit.inc()
            LOG.warning(
                "%s %s %s: cleaning stopped at its safety limit of %d sources; fainter sources "
                "may be missing", obs_id, band, occ, cleaning.MAX_CLEANED_SOURCES)
        yield (obs_id, band, occ), SkyProducts(
            images=analysis.images, residual_snr=analysis.residual_snr,
            exposure=products.exposure, wcs_keywords=instrument.sky_wcs_keywords(quaternion),
            sources=source_rows(analysis.detections, quaternion, products.exposure),
            irf_corr=analysis.irf_correction.name, irf_spectrum=analysis.irf_correction.spectrum,
            cleaning_limit_reached=analysis.cleaning_limit_reached)


class CatalogueObservation(beam.DoFn):
    """(obs_id, [(band, occ, SkyProducts)]) -> the same, each SkyProducts carrying the
    observation's catalogue; its per-band sources gain their catalogue name."""

    def __init__(self, caldb_dir: str):
        self._caldb_dir = caldb_dir
        self._sources = Metrics.counter(NAMESPACE, "sources_found")
        self._new = Metrics.counter(NAMESPACE, "new_sources")

    def setup(self):
        self._known = Caldb.open(self._caldb_dir).known_sources()

    @isolating("imag")
    def process(self, element):
        obs_id, entries = element
        entries = sorted(entries, key=lambda entry: (parse_band(entry[0]), entry[1]))
        result = catalogue.build_catalogue(
            [(band, occ, sky.sources) for band, occ, sky in entries], self._known,
            bands=sorted({band for band, _, _ in entries}, key=parse_band))
        self._sources.inc(len(result.sources))
        self._new.inc(result.n_new)
        yield obs_id, [(band, occ, dataclasses.replace(sky, catalogue=result))
                       for band, occ, sky in entries]


@dataclasses.dataclass(eq=False)
class Imag(DataclassTransform):
    """((obs_id, band, occ), DetectorProducts) -> ((obs_id, band, occ), SkyProducts).

    Once applied, `by_observation` holds the same results as (obs_id, [(band, occ,
    SkyProducts)]), grouped once for the catalogue: the per-observation writers take it as it
    is rather than group the keyed results again (a shuffle and a stage each).
    """

    imag_params: object
    caldb_dir: str
    timelines: beam.PCollection
    failure_log: object = None  # failures.FailureLog
    by_observation: beam.PCollection = dataclasses.field(default=None, init=False)

    def expand(self, detector_products):
        sky = detector_products | "SkyImages" >> beam.ParDo(
            with_failure_log(MakeSkyImages(self.caldb_dir, self.imag_params), self.failure_log),
            beam.pvalue.AsDict(self.timelines))
        self.by_observation = grouped_by_observation(sky) | "Catalogue" >> beam.ParDo(
            with_failure_log(CatalogueObservation(self.caldb_dir), self.failure_log))
        return self.by_observation | "PerKey" >> beam.FlatMapTuple(
            lambda obs_id, entries: [((obs_id, band, occ), sky) for band, occ, sky in entries])
