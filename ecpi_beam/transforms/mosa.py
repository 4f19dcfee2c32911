"""MOSA as Beam transforms: the survey's mosaic of a whole campaign (docs/mosa.md).

In each observation's pipeline, `WriteMosaicInputs` stores what the observation adds to any
mosaic, `ECL-MOS-ACC_<OBS_ID>.fits`: per band and occultation type, its sky image cleaned of
the sources IMAG found, in rates, with variance, partial coding, WCS and the sources to restore
(kernels.mosaic.SkyRates). After every observation of the campaign has run (in any number of
waves, runs or workers), `CampaignMosaic` combines the stored accumulators of the observations
that succeeded:

    accumulator URLs -> read -> ((obs_id, band, occ[, pointing]), SkyRates)
      -> ((band, occ, tile), MosaicSums) -> CombinePerKey -> MosaicMap per (band, occ)
           -> ECL-MOS-IMA, and the peaks: candidates                      [side input]
    URLs -> read -> ((band, occ, candidate), MosaicSums on its local grid) -> CombinePerKey
           -> the PSF fit of each candidate: positions                     [side input]
    URLs -> read -> ((band, occ, source), LightCurvePoint): forced fluxes -> GroupByKey
           -> FLUX (weighted mean), the catalogue (known sources, NEW) -> ECL-MOS-SOP, ECL-MOS-LCS

Every accumulator is small and adds exactly (sums of f/v, 1/v, exposure...), so the mosaic is
the same whatever the waves, workers or runs the observations went through; each pass reads the
stored files again rather than hold thousands of images between passes.
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.metrics import Metrics

from ecpi_beam.caldb import Caldb
from ecpi_beam.io.mosaic_products import (mosaic_image_hdus, mosaic_input_hdus,
                                          mosaic_light_curve_hdus, mosaic_source_hdus,
                                          read_mosaic_inputs)
from ecpi_beam.io.image_products import parse_band
from ecpi_beam.io.products import (MOSAIC_OBS_ID, pointing_index, product_url,
                                    standard_keywords, write_product)
from ecpi_beam.kernels import catalogue, mosaic, mosaic_sources
from ecpi_beam.transforms.base import (DataclassTransform, SumCombineFn, image_key,
                                      image_key_parts)
from ecpi_beam.transforms.failures import isolating, with_failure_log
from ecpi_beam.transforms.write import _ObservationProductWriter

NAMESPACE = "ecpi.mosa"
ACCUMULATOR = "ECL-MOS-ACC"  # one per observation: what it adds to the mosaic
STAGE = "mosa"


# ============================================================================================
# In each observation's pipeline: the stored accumulator
# ============================================================================================
def observation_rates(sky) -> mosaic.SkyRates:
    """An IMAG result (transforms.imag.SkyProducts) as MOSA combines it."""
    return mosaic.cleaned_rates(sky.residual_snr, sky.images.variance, sky.images.pcode,
                                sky.exposure, sky.wcs_keywords, sky.sources,
                                getattr(sky, "pointing", None))


def accumulator_hdus(entries):
    return mosaic_input_hdus([(band, occ, observation_rates(sky)) for band, occ, sky in entries])


class WriteMosaicInputs(_ObservationProductWriter):
    """(obs_id, [(band, occ, SkyProducts)]) (Imag.by_observation) -> ECL-MOS-ACC_<OBS_ID>."""

    def expand(self, values):
        return self._write_each(self._by_observation(values), accumulator_hdus)


# ============================================================================================
# After the waves: the campaign's mosaic
# ============================================================================================
class ReadMosaicInputs(beam.DoFn):
    """(obs_id, URL of its ECL-MOS-ACC) -> ((obs_id, band, occ[, pointing]), SkyRates): one
    per image of each stable pointing."""

    def __init__(self):
        self._read = Metrics.counter(NAMESPACE, "accumulators_read")

    @isolating(STAGE)
    def process(self, element):
        obs_id, url = element
        _, entries = read_mosaic_inputs(url)
        self._read.inc()
        for band, occ, rates in entries:
            yield image_key(obs_id, band, occ, pointing_index(rates)), rates


def _read(pipeline_or_pbegin, label, accumulators, failure_log):
    return (pipeline_or_pbegin
            | f"{label}Urls" >> beam.Create([(obs_id, url) for obs_id, url, *_ in accumulators])
            | f"{label}Read" >> beam.ParDo(with_failure_log(ReadMosaicInputs(), failure_log)))


class SampleOnGrid(beam.DoFn):
    """((obs_id, band, occ[, pointing]), SkyRates) -> ((band, occ, tile), MosaicSums) for each
    tile."""

    def __init__(self, grid, pcode_min: float):
        self._grid, self._pcode_min = grid, pcode_min
        self._images = Metrics.counter(NAMESPACE, f"images_on_{grid.kind}")

    @isolating(STAGE)
    def process(self, element):
        (_, band, occ, _), rates = image_key_parts(element[0]), element[1]
        self._images.inc()
        for tile, sums in mosaic.image_to_grid(self._grid, rates, self._pcode_min).items():
            yield (band, occ, int(tile)), sums


@dataclasses.dataclass(eq=False)
class MosaicOnGrid(DataclassTransform):
    """((obs_id, band, occ[, pointing]), SkyRates) -> ((band, occ), MosaicMap) on one grid."""

    grid: object
    pcode_min: float
    failure_log: object = None

    def expand(self, images):
        grid = self.grid
        return (images
                | "Sample" >> beam.ParDo(with_failure_log(SampleOnGrid(grid, self.pcode_min),
                                                          self.failure_log))
                | "SumTiles" >> beam.CombinePerKey(SumCombineFn())
                | "ByImage" >> beam.MapTuple(lambda key, sums: ((key[0], key[1]), (key[2], sums)))
                | "Group" >> beam.GroupByKey()
                | "Map" >> beam.MapTuple(lambda key, tiles: (key, mosaic.mosaic_map(
                    grid, dict(tiles)))))


class LocalLikelihoods(beam.DoFn):
    """((obs_id, band, occ[, pointing]), SkyRates) -> ((band, occ, k), PositionLikelihood):
    the image's part of the joint fit of each candidate k of that (band, occ) it sees."""

    def __init__(self, pcode_min: float):
        self._pcode_min = pcode_min

    @isolating(STAGE)
    def process(self, element, candidates):
        (_, band, occ, _), rates = image_key_parts(element[0]), element[1]
        for k, candidate in candidates.get((band, occ), ()):
            part = mosaic_sources.position_likelihood(rates, candidate.ra, candidate.dec,
                                                      self._pcode_min)
            if part is not None:
                yield (band, occ, int(k)), part


class ForcedFluxes(beam.DoFn):
    """((obs_id, band, occ[, pointing]), SkyRates) -> ((band, occ, k), LightCurvePoint) for
    each source k of that (band, occ) the image sees."""

    def __init__(self, pcode_min: float, spans: dict):
        self._pcode_min, self._spans = pcode_min, dict(spans)
        self._points = Metrics.counter(NAMESPACE, "light_curve_points")

    @isolating(STAGE)
    def process(self, element, sources):
        (obs_id, band, occ, _), rates = image_key_parts(element[0]), element[1]
        # a row per image: an observation of several pointings gives one per pointing
        tstart, tstop = ((rates.pointing.tstart, rates.pointing.tstop)
                         if rates.pointing is not None else self._spans[obs_id])
        for k, row in sources.get((band, occ), ()):
            measured = mosaic_sources.forced_flux(rates, row.ra, row.dec, self._pcode_min)
            if measured is not None:
                flux, flux_err, pcode = measured
                self._points.inc()
                yield (band, occ, int(k)), mosaic_sources.LightCurvePoint(
                    obs_id, tstart, tstop, flux, flux_err, rates.exposure * pcode, pcode)


@dataclasses.dataclass(frozen=True)
class MosaicCatalogue:
    """The mosaic's sources: per (band, occ) its rows, the catalogue of them all, and one light
    curve per row: [(catalogue index, name, row, band, occ, points)] in catalogue order."""

    found: tuple  # (((band, occ), (SourceRow, ...)), ...)
    catalogue: object  # kernels.catalogue.ObservationCatalogue
    curves: tuple


class AssembleSources(beam.DoFn):
    """[((band, occ, k), [LightCurvePoint])] and the refined rows -> MosaicCatalogue: each
    row's FLUX the weighted mean of its light curve, the catalogue of the mosaic's detections
    matched to ECL-SRC-CAT by the per-observation association (kernels.catalogue)."""

    def __init__(self, caldb_dir: str):
        self._caldb_dir = caldb_dir
        self._sources = Metrics.counter(NAMESPACE, "sources_found")

    def setup(self):
        self._known = Caldb.open(self._caldb_dir).known_sources()

    def process(self, curves, refined):
        points = {key: list(values) for key, values in curves}
        found = {}
        for (band, occ), rows in refined.items():
            measured = [(k, mosaic_sources.with_flux(row, points.get((band, occ, k), ())),
                         sorted(points.get((band, occ, k), ()), key=lambda p: p.tstart))
                        for k, row in rows]
            found[(band, occ)] = sorted(measured, key=lambda m: -m[1].snr)
        keys = sorted(found, key=lambda key: (key[1], parse_band(key[0])))
        result = catalogue.build_catalogue(
            [(band, occ, [row for _, row, _ in found[(band, occ)]]) for band, occ in keys],
            self._known, bands=sorted({band for band, _ in keys}, key=parse_band))
        self._sources.inc(len(result.sources))
        light_curves = []
        for band, occ in keys:
            for index, (_, row, curve) in enumerate(found[(band, occ)]):
                label = result.labels[(band, occ, index)]
                light_curves.append((label + 1, result.sources[label].name, row, band, occ,
                                     curve))
        light_curves.sort(key=lambda c: (c[0], c[4], parse_band(c[3])))
        yield MosaicCatalogue(tuple(((band, occ), tuple(row for _, row, _ in found[(band, occ)]))
                                    for band, occ in keys), result, tuple(light_curves))


def _refined_by_image(rows):
    """[((band, occ, k), SourceRow)] -> {(band, occ): [(k, SourceRow)]}, duplicates dropped."""
    by_image = {}
    for (band, occ, k), row in rows:
        by_image.setdefault((band, occ), []).append((k, row))
    out = {}
    for key, members in by_image.items():
        kept = {id(row) for row in mosaic_sources.distinct([row for _, row in members])}
        out[key] = sorted([(k, row) for k, row in members if id(row) in kept],
                          key=lambda m: m[0])
    return out


def _candidates_by_image(found):
    """((band, occ), [SourceRow]) list -> {(band, occ): [(k, SourceRow)]}."""
    return {key: list(enumerate(rows)) for key, rows in found}


@dataclasses.dataclass(eq=False)
class CampaignMosaic(DataclassTransform):
    """pipeline -> the URLs of the campaign's MOSA products, from the stored accumulators
    `accumulators` [(obs_id, URL, tstart, tstop), ...] of the observations that succeeded."""

    mosa_params: object
    accumulators: list
    caldb_dir: str
    working_out: str
    fingerprint: str
    products: tuple  # the MOSA products to write
    failure_log: object = None

    def expand(self, pbegin):
        params, log = self.mosa_params, self.failure_log
        grids = [mosaic.make_grid(kind, params.nside, params.car_pixel_deg) for kind in params.grid]
        observations = [(obs_id, tstart, tstop) for obs_id, _, tstart, tstop in self.accumulators]
        images = _read(pbegin, "Mosaic", self.accumulators, log)
        maps = [images | f"Mosaic{grid.kind.upper()}" >> MosaicOnGrid(grid, params.pcode_min, log)
                for grid in grids]
        write = dict(working_out=self.working_out, fingerprint=self.fingerprint,
                     observations=observations, failure_log=log)
        written = []
        if "ECL-MOS-IMA" in self.products:
            totals = beam.pvalue.AsDict(
                images
                | "PerImage" >> beam.MapTuple(lambda key, rates: ((key[1], key[2]),
                                                                  (1, rates.exposure)))
                | "Totals" >> beam.CombinePerKey(lambda values: tuple(map(sum, zip(*values)))))
            tagged = [m | f"Tag{grid.kind}" >> beam.MapTuple(
                lambda key, value, grid=grid: (key[0], key[1], grid, value))
                for m, grid in zip(maps, grids)]
            written.append(
                tagged | "AllMaps" >> beam.Flatten() | "CollectMaps" >> beam.combiners.ToList()
                | "WriteMosIma" >> beam.ParDo(WriteCampaignProduct(
                    "ECL-MOS-IMA", lambda maps, rows, totals: mosaic_image_hdus(maps, rows, totals),
                    **write), totals))
        if not {"ECL-MOS-SOP", "ECL-MOS-LCS"} & set(self.products):
            return written | "Written" >> beam.Flatten()
        snr, grid = params.snr_ths, grids[0]  # sources are searched on the first grid
        candidates = beam.pvalue.AsSingleton(
            maps[0]
            | "FindPeaks" >> beam.MapTuple(
                lambda key, value: (key, mosaic.find_mosaic_sources(grid, value, snr)))
            | "AllPeaks" >> beam.combiners.ToList()
            | "Candidates" >> beam.Map(_candidates_by_image))
        refined = beam.pvalue.AsSingleton(
            _read(pbegin, "Local", self.accumulators, log)
            | "LocalGrids" >> beam.ParDo(with_failure_log(LocalLikelihoods(params.pcode_min),
                                                          log), candidates)
            | "SumLocal" >> beam.CombinePerKey(SumCombineFn())
            | "Fit" >> beam.Map(lambda item, found: (item[0], mosaic_sources.refine(
                dict(found[item[0][:2]])[item[0][2]], item[1])), candidates)
            | "AllFitted" >> beam.combiners.ToList()
            | "Distinct" >> beam.Map(_refined_by_image))
        spans = {obs_id: (tstart, tstop) for obs_id, _, tstart, tstop in self.accumulators}
        assembled = (
            _read(pbegin, "Curves", self.accumulators, log)
            | "Forced" >> beam.ParDo(with_failure_log(ForcedFluxes(params.pcode_min, spans), log),
                                     refined)
            | "Curve" >> beam.GroupByKey()
            | "AllCurves" >> beam.combiners.ToList()
            | "Assemble" >> beam.ParDo(AssembleSources(self.caldb_dir), refined))
        if "ECL-MOS-SOP" in self.products:
            written.append(assembled | "WriteMosSop" >> beam.ParDo(WriteCampaignProduct(
                "ECL-MOS-SOP", lambda result, rows: mosaic_source_hdus(
                    result.found, rows, result.catalogue), **write)))
        if "ECL-MOS-LCS" in self.products:
            written.append(assembled | "WriteMosLcs" >> beam.ParDo(WriteCampaignProduct(
                "ECL-MOS-LCS", lambda result, rows: mosaic_light_curve_hdus(result.curves, rows),
                **write)))
        return written | "Written" >> beam.Flatten()


def mosaic_keywords(product, rows, fingerprint):
    """Standard keywords of a campaign product: OBS_ID 'MOSAIC', the campaign's time span."""
    span = {"OBS_ID": MOSAIC_OBS_ID, "TSTART": min(r[1] for r in rows),
            "TSTOP": max(r[2] for r in rows)}
    keywords = standard_keywords(product, span, fingerprint)
    keywords["NOBS"] = (len(rows), "observations in the mosaic")
    return keywords


class WriteCampaignProduct(beam.DoFn):
    """The collected payload of a campaign -> one product file <PRODUCT>_MOSAIC.fits. A fault
    (a full disk, a refused path) is the failure of observation 'MOSAIC', recorded as every
    writer's is (transforms/failures.isolating), not a stopped pipeline: the run then removes
    every campaign product (nothing partial) and exits 2."""

    def __init__(self, product, hdus_of, working_out, fingerprint, observations, failure_log):
        self._product, self._hdus_of = product, hdus_of
        self._working_out, self._fingerprint = working_out, fingerprint
        self._observations, self.failure_log = list(observations), failure_log

    @isolating("write", obs_id=lambda _: MOSAIC_OBS_ID)
    def process(self, payload, *side_inputs):
        rows = self._observations
        if not rows:
            return
        url = product_url(self._working_out, self._product, MOSAIC_OBS_ID)
        write_product(url, self._hdus_of(payload, rows, *side_inputs),
                      mosaic_keywords(self._product, rows, self._fingerprint))
        Metrics.counter("ecpi.write", "products_written").inc()
        yield url
