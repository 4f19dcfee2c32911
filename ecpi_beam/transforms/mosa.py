"""MOSA as Beam transforms: every sky image of a campaign on one all-sky mosaic (docs/mosa.md).

Each ((obs_id, band, occ), SkyProducts) is sampled on the grid tile by tile; a CombineFn keyed
by (band, occ, tile) adds the tiles' sums, so a mosaic of thousands of observations streams
through tile-sized accumulators; the tiles of each (band, occ) are then joined into one map,
searched for sources, and written as ECL-MOS-IMA / ECL-MOS-SOP.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from ecpi_beam import instrument
from ecpi_beam.io.mosaic_products import mosaic_image_hdus, mosaic_source_hdus
from ecpi_beam.io.products import MOSAIC_OBS_ID, product_url, standard_keywords, write_product
from ecpi_beam.kernels import mosaic
from ecpi_beam.transforms.base import DataclassTransform, SumCombineFn
from ecpi_beam.transforms.failures import isolating, with_failure_log

NAMESPACE = "ecpi.mosa"


class SampleOnGrid(beam.DoFn):
    """((obs_id, band, occ), SkyProducts) -> ((band, occ, tile), MosaicSums) for each tile: the
    cleaned image with its sources restored (kernels.mosaic.restored_intensity)."""

    def __init__(self, grid, pcode_min: float):
        self._grid, self._pcode_min = grid, pcode_min
        self._images = Metrics.counter(NAMESPACE, f"images_on_{grid.kind}")

    @isolating("mosa")
    def process(self, element):
        (_, band, occ), sky = element
        intensity = mosaic.restored_intensity(sky.residual_snr, sky.images.variance, sky.sources,
                                              sky.exposure)
        # the WCS is the product's: arrays in product orientation (east left), as in ECL-SKY-IMA
        as_product = instrument.sky_image_to_fits
        tiles = mosaic.image_to_grid(self._grid, as_product(intensity),
                                     as_product(sky.images.variance),
                                     as_product(sky.images.pcode), sky.exposure,
                                     sky.wcs_keywords, self._pcode_min)
        self._images.inc()
        for tile, sums in tiles.items():
            yield (str(band), str(occ), int(tile)), sums


@dataclasses.dataclass(eq=False)
class MosaicOnGrid(DataclassTransform):
    """((obs_id, band, occ), SkyProducts) -> ((band, occ), MosaicMap) on one grid."""

    grid: object
    pcode_min: float
    failure_log: object = None

    def expand(self, sky):
        grid = self.grid
        return (sky
                | "Sample" >> beam.ParDo(with_failure_log(SampleOnGrid(grid, self.pcode_min),
                                                          self.failure_log))
                | "SumTiles" >> beam.CombinePerKey(SumCombineFn())
                | "ByImage" >> beam.MapTuple(lambda key, sums: ((key[0], key[1]), (key[2], sums)))
                | "Group" >> beam.GroupByKey()
                | "Map" >> beam.MapTuple(lambda key, tiles: (key, mosaic.mosaic_map(
                    grid, dict(tiles)))))


def _observation_rows(observations, obs_ids):
    return [(obs_id, float(observations[obs_id].keywords["TSTART"]),
             float(observations[obs_id].keywords["TSTOP"]))
            for obs_id in sorted(obs_ids) if obs_id in observations]


def mosaic_keywords(product, rows, fingerprint):
    """Standard keywords of a campaign product: OBS_ID 'MOSAIC', the campaign's time span."""
    span = {"OBS_ID": MOSAIC_OBS_ID, "TSTART": min(r[1] for r in rows),
            "TSTOP": max(r[2] for r in rows)}
    keywords = standard_keywords(product, span, fingerprint)
    keywords["NOBS"] = (len(rows), "observations in the mosaic")
    return keywords


class MosaResult(NamedTuple):
    written: beam.PCollection  # URLs of the products
    sources: beam.PCollection | None  # ((band, occ), [SourceRow]) found on the mosaic


@dataclasses.dataclass(eq=False)
class Mosa(DataclassTransform):
    """((obs_id, band, occ), SkyProducts) -> MosaResult: the URLs of ECL-MOS-IMA and
    ECL-MOS-SOP, and the sources found on the mosaic (when asked for, or `find_sources`)."""

    mosa_params: object
    working_out: str
    fingerprint: str
    observations: beam.PCollection  # (obs_id, Observation): header keywords
    failure_log: object = None
    find_sources: bool = False  # SPEX extracts the mosaic's sources

    def expand(self, sky):
        params = self.mosa_params
        grids = [mosaic.make_grid(kind, params.nside, params.car_pixel_deg) for kind in params.grid]
        maps = [sky | f"Mosaic{grid.kind.upper()}" >> MosaicOnGrid(grid, params.pcode_min,
                                                                   self.failure_log)
                for grid in grids]
        obs_ids = beam.pvalue.AsList(sky | "ObsIds" >> beam.Map(lambda kv: kv[0][0])
                                     | "Unique" >> beam.Distinct())
        observations = beam.pvalue.AsDict(self.observations)
        written = []
        if "ECL-MOS-IMA" in params.out_files:
            tagged = [m | f"Tag{grid.kind}" >> beam.MapTuple(
                lambda key, value, grid=grid: (key[0], key[1], grid, value))
                for m, grid in zip(maps, grids)]
            written.append(tagged | "AllMaps" >> beam.Flatten()
                           | "CollectMaps" >> beam.combiners.ToList()
                           | "WriteMosIma" >> beam.ParDo(with_failure_log(WriteMosaicProduct(
                               "ECL-MOS-IMA", mosaic_image_hdus, self.working_out,
                               self.fingerprint), self.failure_log), obs_ids, observations))
        found = None
        if "ECL-MOS-SOP" in params.out_files or self.find_sources:
            snr, grid = params.snr_ths, grids[0]  # sources are searched on the first grid
            found = maps[0] | "FindSources" >> beam.MapTuple(
                lambda key, value: (key, mosaic.find_mosaic_sources(grid, value, snr)))
        if "ECL-MOS-SOP" in params.out_files:
            written.append(found
                           | "CollectSources" >> beam.combiners.ToList()
                           | "WriteMosSop" >> beam.ParDo(with_failure_log(WriteMosaicProduct(
                               "ECL-MOS-SOP", mosaic_source_hdus, self.working_out,
                               self.fingerprint), self.failure_log), obs_ids, observations))
        return MosaResult((written | "Written" >> beam.Flatten()) if written else None, found)


class WriteMosaicProduct(beam.DoFn):
    """The collected entries of a campaign -> one product file <PRODUCT>_MOSAIC.fits."""

    def __init__(self, product, hdus_of, working_out, fingerprint):
        self._product, self._hdus_of = product, hdus_of
        self._working_out, self._fingerprint = working_out, fingerprint

    @isolating("write", obs_id=lambda _: MOSAIC_OBS_ID)  # a failed write fails the mosaic only
    def process(self, entries, obs_ids, observations):
        rows = _observation_rows(observations, obs_ids)
        if not rows:
            return
        url = product_url(self._working_out, self._product, MOSAIC_OBS_ID)
        write_product(url, self._hdus_of(entries, rows),
                      mosaic_keywords(self._product, rows, self._fingerprint))
        Metrics.counter("ecpi.write", "products_written").inc()
        yield url
