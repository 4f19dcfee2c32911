"""BUBE as Beam transforms: Earth-occultation timelines, keyed detector images, background.

Calibrated chunks (obs_id, EventChunk) become partial 80 x 80 images keyed (obs_id, band, occ),
with the stable pointing appended after the first (transforms.base.image_key); a CombineFn with
an image-sized accumulator sums them, so memory does not grow with the observation; the
background is then fitted per key (docs/science.md, "Backgrounds").
"""
from __future__ import annotations

import dataclasses
import logging

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb
from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import background, binning, bube, earth, intervals
from ecpi_beam.kernels.gti import good_time
from ecpi_beam.kernels.timeline import POINTING_TOLERANCE_DEG, ImagingTimeline, imaging_timeline
from ecpi_beam.transforms.base import (DataclassTransform, image_key, image_key_parts,
                                      pointing_name, worker_state)
from ecpi_beam.transforms.failures import isolating, with_failure_log
from ecpi_beam.transforms.read import chunk_events

NAMESPACE = "ecpi.bube"
LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DetectorProducts:
    """BUBE result for one image key (obs_id, band, occ[, pointing])."""

    counts: np.ndarray  # (80, 80) int64
    exposure: float  # s: good time in the occultation class
    good_pixels: np.ndarray  # (80, 80) bool: not dead, not noisy
    efficiency: np.ndarray  # (80, 80) relative efficiency (CALDB EFFIC)
    mode: str
    correction: background.BackgroundResult
    earth: earth.EarthTemplates = None  # the key's Earth geometry (ECL-EAR-OFM), when made
    # kernels.timeline.Pointing of the image, when its observation holds several
    pointing: object = None


def observation_timeline(observation, bube_params) -> ImagingTimeline:
    """The ImagingTimeline of an Observation (see transforms.read) for the [bube] parameters,
    with the time it spent slewing (FLAG_ATT 0x55: not in the attitude's good time)."""
    good = good_time(observation)
    timeline = imaging_timeline(
        observation.attitude.time, observation.attitude.qparam,
        observation.orbit.time, observation.orbit.position,
        good["ALL"], bube_params.ear_occ_bub, bube_params.peof_min, bube_params.peof_max,
        min_pointing_s=bube_params.pointing_min_time)
    span = float(observation.keywords["TSTOP"]) - float(observation.keywords["TSTART"])
    return dataclasses.replace(
        timeline, slew_seconds=max(span - float(intervals.duration(good["ATT"])), 0.0))


class BinDetectorImages(beam.DoFn):
    """One partial detector image per (band, occ) of each calibrated chunk, all keys binned in
    one pass (binning.keyed_histograms)."""

    def __init__(self, bands, occ_types):
        self._bands = tuple((int(lo), int(hi)) for lo, hi in bands)
        self._occ_types = tuple(occ_types)
        self._binned = Metrics.counter(NAMESPACE, "events_binned")
        self._forced = Metrics.counter(NAMESPACE, "forced_triggers_not_imaged")
        self._keyed = binning.keyed_binning(self._bands)  # a few small arrays

    @isolating("bube")
    def process(self, element, timelines=None):
        """(obs_id, EventChunk) with its occultation classes per pointing, or (obs_id, events)
        and {obs_id: ImagingTimeline} (the streaming windows)."""
        obs_id, chunk = element
        events = chunk_events(chunk)
        by_pointing = (timelines[obs_id].class_gti_by_pointing() if timelines is not None
                       else chunk.context.class_gti)
        if by_pointing is None:
            raise EcpiError(f"{obs_id}: no imaging timeline (its failure is recorded), "
                            "nothing to bin")
        # forced triggers are electronic test events, not photons: kept in ECL-EVT-CAL, not imaged
        photon = (events["FLAG"] & instrument.FLAG_FORCED_TRIGGER) == 0
        self._forced.inc(int(len(events) - photon.sum()))
        for pointing, class_gti in enumerate(by_pointing):  # each pointing its own images
            classes = [photon & intervals.mask_times(events["TIME"], class_gti[occ])
                       for occ in self._occ_types]
            images = binning.keyed_histograms(self._keyed, events["IDET"], events["JDET"],
                                              events["PI"], classes)
            self._binned.inc(int(images.sum()))
            for occ, by_band in zip(self._occ_types, images):
                for band, image in zip(self._bands, by_band):
                    yield image_key(obs_id, instrument.band_name(band), occ, pointing), image


class DetectorImageSum(beam.CombineFn):
    """Sums 80 x 80 count images; the accumulator is one image (associative, commutative)."""

    def create_accumulator(self):
        return binning.empty_image()

    def add_input(self, accumulator, image):
        return binning.add(accumulator, image)

    def merge_accumulators(self, accumulators):
        return binning.merge(accumulators)

    def extract_output(self, accumulator):
        return accumulator


def _background_corrector(caldb, detection, smart) -> bube.BackgroundCorrector:
    return bube.BackgroundCorrector.from_caldb(
        caldb, None if detection is None else dict(detection), smart=smart)


class CorrectBackground(beam.DoFn):
    """Fits and removes the background of each keyed detector image (mode per occ type)."""

    def __init__(self, caldb_dir: str, mode_by_occ: dict, imag_params=None,
                 earth_map: bool = True):
        self._caldb_dir = caldb_dir
        self._mode_by_occ = dict(mode_by_occ)
        self._imag_params = imag_params
        self._earth_map = earth_map  # ECL-EAR-OFM wanted: the Earth geometry of every key

    def setup(self):
        detection = None if self._imag_params is None else (
            ("snr_threshold", self._imag_params.effective_snr_threshold),
            ("pcode_min", self._imag_params.pcode_min), ("win_dim", self._imag_params.win_dim))
        self._corrector = worker_state(
            _background_corrector, Caldb.open(self._caldb_dir), detection,
            "shape_moretti_smart" in self._mode_by_occ.values())

    @isolating("bube")
    def process(self, element, timelines):
        key, counts = element
        obs_id, band, occ, pointing = image_key_parts(key)
        timeline = timelines[obs_id].for_pointing(pointing)
        mode = self._mode_by_occ[occ]
        fitted = self._corrector.correct(mode, counts, obs_id, band, occ, timeline,
                                         earth_map=self._earth_map)
        LOG.info("BUBE %s %s %s%s: %d counts, %.1f s, background %s", obs_id, band, occ,
                 pointing_name(pointing), int(np.sum(counts)), fitted.exposure, mode)
        yield key, DetectorProducts(
            counts=counts, exposure=fitted.exposure, good_pixels=self._corrector.good,
            efficiency=self._corrector.efficiency, mode=mode, correction=fitted.correction,
            earth=fitted.earth, pointing=timeline.pointing)


OFF_POINTING_REPORTED_S = 1.0  # good time on no imaged pointing worth a warning
# A background mode blind to the Earth, in an occultation class whose good time sees the
# Earth over at least EARTH_WARNING_FRACTION of the field for at least EARTH_WARNING_SHARE of
# it, is a warning: the Earth's shape left in the detector image makes sources at SNR 7-10
# (measured: up to 16 per 3600 s observation in `shape` with the Earth in the field half the
# time; none with the seed's default shape_moretti_earth; docs/background.md)
EARTH_WARNING_FRACTION = 0.05
EARTH_WARNING_SHARE = 0.1


class MakeTimeline(beam.DoFn):
    """(obs_id, Observation) -> (obs_id, ImagingTimeline): its stable pointings, each imaged.
    Counted: the pointings imaged, the time spent slewing, and the good time on no pointing
    held long enough to be imaged (a warning too: never a silent loss)."""

    def __init__(self, bube_params):
        self._params = bube_params
        self._off_pointing = Metrics.counter(NAMESPACE, "good_seconds_off_pointing")
        self._slews = Metrics.counter(NAMESPACE, "slew_seconds")
        self._pointings = Metrics.counter(NAMESPACE, "pointings_imaged")
        self._earth_unmodelled = Metrics.counter(NAMESPACE, "classes_with_earth_unmodelled")

    @isolating("timeline")
    def process(self, element):
        obs_id, observation = element
        timeline = observation_timeline(observation, self._params)
        self._pointings.inc(timeline.n_pointings)
        self._slews.inc(int(round(timeline.slew_seconds)))
        if timeline.n_pointings > 1:
            LOG.info("%s: %d stable pointings imaged (%s), %.0f s of slews", obs_id,
                     timeline.n_pointings, ", ".join(
                         f"P{k} {intervals.duration(timeline.for_pointing(k).good_time):.0f} s"
                         for k in range(timeline.n_pointings)), timeline.slew_seconds)
        if timeline.off_pointing_seconds >= OFF_POINTING_REPORTED_S:
            self._off_pointing.inc(int(round(timeline.off_pointing_seconds)))
            LOG.warning(
                "%s: %.0f s of good time on no stable pointing are not imaged (the attitude "
                "not held within %.2f deg for [bube] pointing_min_time = %g s); %d pointing(s) "
                "imaged", obs_id, timeline.off_pointing_seconds, POINTING_TOLERANCE_DEG,
                self._params.pointing_min_time, timeline.n_pointings)
        self._warn_of_earth_unmodelled(obs_id, timeline)
        yield obs_id, timeline

    def _warn_of_earth_unmodelled(self, obs_id, timeline) -> None:
        views = [timeline.for_pointing(k) for k in range(timeline.n_pointings)]
        for occ in self._params.ear_occ_bub:
            mode = self._params.correction_for(occ)
            if mode in background.EARTH_MODES:
                continue
            good = sum(view.exposure(occ) for view in views)
            seen = sum(view.earth_in_field_seconds(occ, EARTH_WARNING_FRACTION)
                       for view in views)
            if good > 0.0 and seen >= EARTH_WARNING_SHARE * good:
                self._earth_unmodelled.inc()
                LOG.warning(
                    "%s %s: the Earth covers %.0f %% or more of the field for %.0f of the %.0f "
                    "s of good time, and [bube] bkg_cor_mod '%s' does not model it (its shape "
                    "can make false sources at SNR 7-10); shape_moretti_earth does", obs_id,
                    occ, 100 * EARTH_WARNING_FRACTION, seen, good, mode)


@dataclasses.dataclass(eq=False)
class ImagingTimelines(DataclassTransform):
    """(obs_id, Observation) -> (obs_id, ImagingTimeline)."""

    bube_params: object
    failure_log: object = None  # failures.FailureLog

    def expand(self, observations):
        return observations | beam.ParDo(
            with_failure_log(MakeTimeline(self.bube_params), self.failure_log))


@dataclasses.dataclass(eq=False)
class Bube(DataclassTransform):
    """Calibrated chunks -> ((obs_id, band, occ[, pointing]), DetectorProducts)."""

    bube_params: object
    caldb_dir: str
    timelines: beam.PCollection
    failure_log: object = None  # failures.FailureLog
    imag_params: object = None  # detection settings of shape_moretti_smart

    def expand(self, calibrated):
        params = self.bube_params
        side = beam.pvalue.AsDict(self.timelines)
        # the chunks carry their occultation classes (transforms/read.py): binning reads no
        # side input, and fuses with reading and calibration on every runner
        images = (calibrated
                  | "Bin" >> beam.ParDo(with_failure_log(
                      BinDetectorImages(params.energy_channels, params.ear_occ_bub),
                      self.failure_log))
                  | "Sum" >> beam.CombinePerKey(DetectorImageSum()))
        mode_by_occ = {occ: params.correction_for(occ) for occ in params.ear_occ_bub}
        return images | "Background" >> beam.ParDo(
            with_failure_log(CorrectBackground(self.caldb_dir, mode_by_occ, self.imag_params,
                                               "ECL-EAR-OFM" in params.out_files),
                             self.failure_log), side)
