"""SPEX as Beam transforms: mask-weighted spectra and light curves of sources (docs/spex.md).

The sources of each observation are the [spex] sources list, or every source IMAG found
(merged across bands). Each calibrated chunk adds, per (obs_id, source, occ) and stable
pointing that sees the source, its weighted events to a spectrum and to one light curve per
band; a CombineFn keyed by (obs_id, source index, occ[, pointing]) sums them, so an observation
streams through source-sized accumulators and the sources of all observations are extracted in
parallel; the sums become ECL-SPS-S1 (with its RMF and ARF) and ECL-LCS-S1 files, one set per
pointing (the response depends on the source's place in the field).
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb
from ecpi_beam.io import fs
from ecpi_beam.io.gti import gti_hdu
from ecpi_beam.io.products import (band_keywords, pointing_hdu_keywords, standard_keywords,
                                    write_product)
from ecpi_beam.io.spectral_products import (arf_hdus, light_curve_hdus, rmf_hdus,
                                            source_keywords, spectrum_hdus)
from ecpi_beam.kernels import background, lightcurves, spectra
from ecpi_beam.kernels.catalogue import detection_label
from ecpi_beam.kernels.mosaic import PEAK_MERGE_DEG
from ecpi_beam.transforms.base import (DataclassTransform, SumCombineFn, image_key_parts,
                                      with_pointing)
from ecpi_beam.transforms.failures import isolating, with_failure_log
from ecpi_beam.transforms.read import chunk_events

NAMESPACE = "ecpi.spex"


def _pointing_part(pointing: int) -> str:
    return f"_P{int(pointing)}" if pointing else ""


def spectrum_stem(obs_id, source_index, occ, pointing: int = 0):
    return f"ECL-SPS-S1_{obs_id}_S{int(source_index):02d}_{occ}{_pointing_part(pointing)}"


def light_curve_name(obs_id, source_index, band, occ, pointing: int = 0):
    return (f"ECL-LCS-S1_{obs_id}_S{int(source_index):02d}_{band}_{occ}"
            f"{_pointing_part(pointing)}.fits")


def _weighter(caldb_dir):
    caldb = Caldb.open(caldb_dir)
    pixcal = caldb.pixel_calibration()
    efficiency = pixcal.imaging_efficiency
    template = background.sky_illumination_template(caldb.mask_pattern(), efficiency)
    return caldb, spectra.SourceWeighter(caldb.mask_pattern(), efficiency, template)


class _WeightsCache:
    """MaskWeights per (obs_id, source index, pointing), computed once per worker."""

    def __init__(self, weighter):
        self._weighter, self._cache = weighter, {}

    def get(self, obs_id, sources, index, quaternion, pointing: int = 0):
        """The weights, or None for a source outside the field of view of this pointing."""
        key = (obs_id, index, pointing)
        if key not in self._cache:
            source = next(s for s in sources if s.index == index)
            seen = self._weighter.shadow(instrument.radec_to_los(source.ra, source.dec,
                                                                 quaternion)).any()
            self._cache[key] = self._weighter.weights(sources, index, quaternion) if seen else None
        return self._cache[key]


class WeightEvents(beam.DoFn):
    """(obs_id, EventChunk) -> ((obs_id, source index, occ[, pointing]), SourceSums) for each
    source, occ and stable pointing that sees the source."""

    def __init__(self, caldb_dir, spex_params, bands, occ_types):
        self._caldb_dir, self._params = caldb_dir, spex_params
        self._bands, self._occ_types = tuple(bands), tuple(occ_types)
        self._weighted = Metrics.counter(NAMESPACE, "events_weighted")

    def setup(self):
        _, weighter = _weighter(self._caldb_dir)
        self._weights = _WeightsCache(weighter)

    @isolating("spex")
    def process(self, element, timelines, sources):
        obs_id, chunk = element
        events = chunk_events(chunk)
        if obs_id not in sources:
            return
        photons = events[(events["FLAG"] & instrument.FLAG_FORCED_TRIGGER) == 0]
        for pointing in range(timelines[obs_id].n_pointings):
            timeline = timelines[obs_id].for_pointing(pointing)
            for source in sources[obs_id]:
                weights = self._weights.get(obs_id, sources[obs_id], source.index,
                                            timeline.reference_quaternion, pointing)
                if weights is None:
                    continue
                event_weights = weights.of_events(photons["IDET"], photons["JDET"])
                for occ in self._occ_types:
                    gti = timeline.class_gti[occ]
                    if not len(gti):
                        continue
                    edges = lightcurves.bin_edges(gti, self._params.time_bin)
                    self._weighted.inc(len(photons))
                    yield with_pointing((str(obs_id), int(source.index), str(occ)),
                                        pointing), spectra.source_sums(
                        photons, event_weights, gti, edges, self._bands,
                        self._params.pi_per_channel)


class WriteSourceProducts(beam.DoFn):
    """((obs_id, source index, occ[, pointing]), SourceSums) -> the URLs of its spectrum (PHA,
    RMF, ARF) and light curves."""

    def __init__(self, caldb_dir, spex_params, bands, working_out, fingerprint,
                 extra_keywords=None):
        self._caldb_dir, self._params, self._bands = caldb_dir, spex_params, tuple(bands)
        self._working_out, self._fingerprint = working_out, fingerprint
        self._extra = dict(extra_keywords or {})
        self._written = Metrics.counter("ecpi.write", "products_written")

    def setup(self):
        caldb, weighter = _weighter(self._caldb_dir)
        self._weights = _WeightsCache(weighter)
        self._rmf = spectra.rebinned_rmf(caldb.rmf(), self._params.pi_per_channel)
        self._arf, self._irf = caldb.arf(), caldb.irf()

    @isolating("spex")
    def process(self, element, timelines, sources, observations, failed):
        key, sums = element
        obs_id, index, occ, pointing = image_key_parts(key)
        if obs_id in failed or sums is None:
            return
        timeline = timelines[obs_id].for_pointing(pointing)
        observation = observations[obs_id]
        source = next(s for s in sources[obs_id] if s.index == index)
        weights = self._weights.get(obs_id, sources[obs_id], index, timeline.reference_quaternion,
                                    pointing)
        gti = timeline.class_gti[occ]
        about = source_keywords(source.name, source.ra, source.dec, weights.off_axis_deg)
        about["OCC_TYPE"] = (occ, "Earth occultation type (NEO, PEO or TEO)")
        about.update(pointing_hdu_keywords(timeline))
        yield from self._write_spectrum(observation, spectrum_stem(obs_id, index, occ, pointing),
                                        sums, weights, about, timeline.exposure(occ), gti)
        if "ECL-LCS-S1" in self._params.out_files:
            edges = lightcurves.bin_edges(gti, self._params.time_bin)
            for k, band in enumerate(self._bands):
                curve = lightcurves.finish_light_curve(edges, sums.light_curves[0, k],
                                                       sums.light_curves[1, k], gti)
                name = light_curve_name(obs_id, index, instrument.band_name(band), occ, pointing)
                yield self._put("ECL-LCS-S1", observation, name, light_curve_hdus(
                    curve, gti, {**about, **band_keywords(band, occ)}))

    def _write_spectrum(self, observation, stem, sums, weights, about, exposure, gti):
        if "ECL-SPS-S1" not in self._params.out_files:
            return
        spectrum = spectra.finish_spectrum(sums.spectrum[0], sums.spectrum[1],
                                           self._params.pi_per_channel, exposure)
        specresp = spectra.source_arf(self._arf, self._irf, weights)
        yield self._put("ECL-SPS-S1", observation, f"{stem}.rmf", rmf_hdus(self._rmf))
        yield self._put("ECL-SPS-S1", observation, f"{stem}.arf",
                        arf_hdus(self._arf, specresp, about))
        yield self._put("ECL-SPS-S1", observation, f"{stem}.fits",
                        spectrum_hdus(spectrum, f"{stem}.rmf", f"{stem}.arf", about)
                        + [gti_hdu(gti, "GTI")])

    def _put(self, product, observation, name, hdus):
        url = fs.inside(self._working_out, name)  # names built from OBS_ID stay confined
        write_product(url, hdus, {**standard_keywords(product, observation.keywords,
                                                      self._fingerprint), **self._extra})
        self._written.inc()
        return url


def catalogue_name(catalogue, band, occ, index, pointing: int = 0) -> str:
    """The name of detection `index` of image (band, occ) of stable pointing `pointing` in the
    observation's catalogue: its known source's, else 'ECL Jhhmmss.s+ddmmss' ('' without a
    catalogue)."""
    label = (catalogue.labels.get(detection_label(band, occ, index, pointing))
             if catalogue is not None else None)
    if label is None:
        return ""
    source = catalogue.sources[label]
    return source.known_name or source.name


@beam.ptransform_fn
def SourcesFound(sky):  # noqa: N802 - a PTransform
    """((obs_id, band, occ[, pointing]), SkyProducts) -> (obs_id, SpexSources): IMAG's
    detections of every band, occultation type and pointing, one per position (brightest
    first), named as in the observation's catalogue (OBJECT of the spectra and light curves)."""
    def detections(key, sky_products):
        obs_id, band, occ, pointing = image_key_parts(key)
        return [(obs_id, (row, catalogue_name(sky_products.catalogue, band, occ, index,
                                              pointing)))
                for index, row in enumerate(sky_products.sources)]

    def merge(obs_id, named_rows):
        named_rows = sorted(named_rows, key=lambda named: -named[0].snr)
        return obs_id, spectra.distinct_sources(
            [(row.ra, row.dec) for row, _ in named_rows], PEAK_MERGE_DEG,
            names=[name for _, name in named_rows])

    return (sky
            | "Detections" >> beam.FlatMapTuple(detections)
            | "ByObservation" >> beam.GroupByKey()
            | "Distinct" >> beam.MapTuple(merge))


def sources_listed(observations, positions):
    """(obs_id, Observation) -> (obs_id, SpexSources) of the [spex] sources list."""
    listed = spectra.distinct_sources(positions, 0.0)
    return observations | "Listed" >> beam.Map(lambda kv: (kv[0], listed))


def sources_of_mosaic(observations, found):
    """(obs_id, Observation) -> (obs_id, SpexSources): every source found on the mosaic (in any
    band), for every observation; those outside an observation's field are skipped later."""
    def merge(rows):
        rows = sorted(rows, key=lambda row: -row.snr)
        return spectra.distinct_sources([(row.ra, row.dec) for row in rows], PEAK_MERGE_DEG)

    merged = beam.pvalue.AsSingleton(
        found
        | "MosaicRows" >> beam.FlatMap(lambda kv: kv[1])
        | "AllRows" >> beam.combiners.ToList()
        | "Merge" >> beam.Map(merge))
    return observations | "FromMosaic" >> beam.Map(lambda kv, sources: (kv[0], sources), merged)


@dataclasses.dataclass(eq=False)
class Spex(DataclassTransform):
    """(obs_id, calibrated events) -> the URLs of ECL-SPS-S1 and ECL-LCS-S1 files."""

    spex_params: object
    bube_params: object  # bands (energy_channels) and occultation types (ear_occ_bub)
    caldb_dir: str
    timelines: beam.PCollection
    sky: beam.PCollection | None  # IMAG results: the sources found (sources_from 'imag')
    observations: beam.PCollection
    failed: object  # side input: failed_obs_ids(failures)
    working_out: str
    fingerprint: str
    failure_log: object = None
    mosaic_sources: beam.PCollection | None = None  # the mosaic's: ((band, occ), [SourceRow])
    extra_keywords: dict | None = None  # written in every product (the mosaic's SRCHASH)

    def expand(self, calibrated):
        params, bands = self.spex_params, self.bube_params.energy_channels
        if params.sources_from == "list":
            sources = sources_listed(self.observations, params.sources)
        elif params.sources_from == "mosaic":
            sources = sources_of_mosaic(self.observations, self.mosaic_sources)
        else:
            sources = self.sky | "SourcesFound" >> SourcesFound()
        sources = beam.pvalue.AsDict(sources)
        timelines = beam.pvalue.AsDict(self.timelines)
        sums = (calibrated
                | "Weight" >> beam.ParDo(with_failure_log(WeightEvents(
                    self.caldb_dir, params, bands, self.bube_params.ear_occ_bub),
                    self.failure_log), timelines, sources)
                | "Sum" >> beam.CombinePerKey(SumCombineFn()))
        return sums | "Write" >> beam.ParDo(
            with_failure_log(WriteSourceProducts(self.caldb_dir, params, bands, self.working_out,
                                                 self.fingerprint, self.extra_keywords),
                             self.failure_log),
            timelines, sources, beam.pvalue.AsDict(self.observations), self.failed)
