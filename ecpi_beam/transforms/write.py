"""Product sinks: every product is written by one writer through the I/O layer (temp then move).

Keyed results ((obs_id, band, occ), value) are grouped per observation, so each product file is
written once, whole, by one worker, on every runner and on local disk or a bucket alike.
"""
from __future__ import annotations

import dataclasses
import json

import apache_beam as beam
from apache_beam.metrics import Metrics

from ecpi_beam.io import fs
from ecpi_beam.io.image_products import PRODUCT_BUILDERS, occultation_gti_hdus
from ecpi_beam.io.products import product_url, standard_keywords, write_product

NAMESPACE = "ecpi.write"
FAILURES_FILE = "failures.jsonl"


def failed_obs_ids(failures):
    """Side input: the set of obs_ids that failed (DPCO), so that no product is written for them."""
    return beam.pvalue.AsSingleton(
        failures
        | "FailedIds" >> beam.combiners.ToList()
        | "AsSet" >> beam.Map(lambda records: {r.get("obs_id") for r in records if r.get("obs_id")}))


def _write(working_out, product, observation, fingerprint, hdus):
    url = product_url(working_out, product, observation.obs_id)
    keywords = standard_keywords(product, observation.keywords, fingerprint)
    write_product(url, hdus, keywords)
    Metrics.counter(NAMESPACE, "products_written").inc()
    return url


class WriteObservationProduct(beam.DoFn):
    """(obs_id, [(band, occ, value), ...]) -> the product file's URL."""

    def __init__(self, product, working_out, fingerprint):
        self._product = product
        self._working_out = working_out
        self._fingerprint = fingerprint

    def process(self, element, observations, failed):
        obs_id, entries = element
        if obs_id in failed:
            return
        entries = sorted(entries, key=lambda entry: (entry[1], _band_order(entry[0])))
        hdus = PRODUCT_BUILDERS[self._product](entries)
        yield _write(self._working_out, self._product, observations[obs_id], self._fingerprint, hdus)


def _band_order(band: str):
    lo, hi = band.split("-")
    return int(lo), int(hi)


@dataclasses.dataclass(eq=False)
class WriteImageProducts(beam.PTransform):
    """((obs_id, band, occ), value) -> one product file per observation; yields URLs."""

    product: str
    working_out: str
    fingerprint: str
    observations: beam.PCollection
    failed: object  # side input: failed_obs_ids(failures)

    def __post_init__(self):
        super().__init__()

    def expand(self, keyed):
        return (keyed
                | "ByObservation" >> beam.MapTuple(lambda key, value: (key[0], (key[1], key[2], value)))
                | "Group" >> beam.GroupByKey()
                | "Write" >> beam.ParDo(
                    WriteObservationProduct(self.product, self.working_out, self.fingerprint),
                    beam.pvalue.AsDict(self.observations), self.failed))


@dataclasses.dataclass(eq=False)
class WriteTimelineProducts(beam.PTransform):
    """(obs_id, ImagingTimeline) -> ECL-GTI-UBC, one OGIP GTI extension per occultation type."""

    product: str
    working_out: str
    fingerprint: str
    observations: beam.PCollection
    failed: object  # side input: failed_obs_ids(failures)

    def __post_init__(self):
        super().__init__()

    def expand(self, timelines):
        def write(element, observations, failed):
            obs_id, timeline = element
            if obs_id in failed:
                return
            hdus = occultation_gti_hdus(timeline, sorted(timeline.class_gti))
            yield _write(self.working_out, self.product, observations[obs_id], self.fingerprint, hdus)

        return timelines | "Write" >> beam.FlatMap(
            write, beam.pvalue.AsDict(self.observations), self.failed)


@dataclasses.dataclass(eq=False)
class WriteFailures(beam.PTransform):
    """Failure records -> `<working_out>/failures.jsonl` (absent when nothing failed)."""

    working_out: str

    def __post_init__(self):
        super().__init__()

    def expand(self, failures):
        def write(records):
            records = sorted(records, key=lambda record: str(record.get("obs_dir", "")))
            if not records:
                return
            url = fs.join(self.working_out, FAILURES_FILE)
            with fs.atomic_write(url) as handle:
                for record in records:
                    handle.write((json.dumps(record, sort_keys=True) + "\n").encode())
            yield url

        return (failures
                | "Collect" >> beam.combiners.ToList()
                | "Write" >> beam.FlatMap(write))
