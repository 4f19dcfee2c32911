"""Product sinks: every product is written by one writer through the I/O layer (temp then move).

Keyed results ((obs_id, band, occ[, pointing]), value) are grouped per observation, so each
product file is written once, whole, by one worker, on every runner and on local disk or a
bucket alike.
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.metrics import Metrics

from ecpi_beam.io import fs, voevent
from ecpi_beam.io.regions import write_regions
from ecpi_beam.io.image_products import PRODUCT_BUILDERS, occultation_gti_hdus, parse_band
from ecpi_beam.io.products import pointing_index, product_url, standard_keywords, write_product
from ecpi_beam.kernels.catalogue import new_source_alerts
from ecpi_beam.transforms.base import DataclassTransform, grouped_by_observation
from ecpi_beam.transforms.failures import isolating, with_failure_log

NAMESPACE = "ecpi.write"


def failed_obs_ids(failures):
    """Side input: the obs_ids that failed (DPCO), so that no product is written for them (a
    list: failures are few; one transform, where a combine to a set took nine)."""
    return beam.pvalue.AsList(
        failures | "FailedIds" >> beam.FlatMap(
            lambda record: [record["obs_id"]] if record.get("obs_id") else []))


def _write(working_out, product, observation, fingerprint, hdus):
    url = product_url(working_out, product, observation.obs_id)
    keywords = standard_keywords(product, observation.keywords, fingerprint)
    write_product(url, hdus, keywords)
    Metrics.counter(NAMESPACE, "products_written").inc()
    return url


def keyed_image_hdus(product):
    """[(band, occ, value), ...] of one observation -> the HDUs of `product`, in a fixed order:
    by stable pointing, occultation type, then band."""
    build = PRODUCT_BUILDERS[product]
    return lambda entries: build(sorted(entries, key=lambda e: (pointing_index(e[2]), e[1],
                                                                parse_band(e[0]))))


def timeline_gti_hdus(timeline):
    return occultation_gti_hdus(timeline, sorted(timeline.class_gti))


class WriteProductFile(beam.DoFn):
    """(obs_id, payload) -> the URL of the product file made of hdus_of(payload)."""

    def __init__(self, product, working_out, fingerprint, hdus_of):
        self._product, self._working_out, self._fingerprint = product, working_out, fingerprint
        self._hdus_of = hdus_of

    @isolating("write")
    def process(self, element, observations, failed):
        obs_id, payload = element
        if obs_id not in failed:
            yield _write(self._working_out, self._product, observations[obs_id],
                         self._fingerprint, self._hdus_of(payload))


@dataclasses.dataclass(eq=False)
class _ObservationProductWriter(DataclassTransform):
    """Writes one product file per observation from (obs_id, payload); yields the URLs.

    Observations in the `failed` side input (DPCO failures) get no product.
    """

    product: str
    working_out: str
    fingerprint: str
    observations: beam.PCollection  # (obs_id, Observation): the header keywords
    failed: object  # side input: failed_obs_ids(failures)
    failure_log: object = None  # failures.FailureLog
    # the input is already (obs_id, [(band, occ, value)]) (Imag.by_observation): not regrouped
    grouped: bool = False

    def _by_observation(self, values):
        return values if self.grouped else grouped_by_observation(values)

    def _write_each(self, payloads, hdus_of):
        return payloads | "Write" >> beam.ParDo(
            with_failure_log(WriteProductFile(self.product, self.working_out, self.fingerprint,
                                              hdus_of), self.failure_log),
            beam.pvalue.AsDict(self.observations), self.failed)


class WriteImageProducts(_ObservationProductWriter):
    """((obs_id, band, occ[, pointing]), value) -> ECL-DET-IMA, ECL-DET-UBC, ECL-SKY-IMA or
    ECL-SOP-IMA."""

    def expand(self, values):
        return self._write_each(self._by_observation(values), keyed_image_hdus(self.product))


class WriteTimelineProducts(_ObservationProductWriter):
    """(obs_id, ImagingTimeline) -> ECL-GTI-UBC, one OGIP GTI extension per occultation type."""

    def expand(self, timelines):
        return self._write_each(timelines, timeline_gti_hdus)


class WriteAlertFiles(beam.DoFn):
    """(obs_id, [(band, occ, SkyProducts)]) -> the URL of one VOEvent per NEW source of the
    observation's catalogue, `<working_out>/ECL-ALERT_<event_id>_0.xml`."""

    def __init__(self, working_out):
        self._working_out = working_out
        self._alerts = Metrics.counter(NAMESPACE, "alerts_written")

    @isolating("write")
    def process(self, element, observations, failed):
        obs_id, entries = element
        catalogue = next((sky.catalogue for _, _, sky in entries if sky.catalogue is not None),
                         None)
        if obs_id in failed or catalogue is None:
            return
        keywords = observations[obs_id].keywords
        mjdref = float(keywords.get("MJDREFI", 0)) + float(keywords.get("MJDREFF", 0.0))
        spans = {sky.pointing.index: (sky.pointing.tstart, sky.pointing.tstop)
                 for _, _, sky in entries if getattr(sky, "pointing", None) is not None}
        for alert in new_source_alerts(catalogue, obs_id, float(keywords["TSTART"]),
                                       float(keywords["TSTOP"]), mjdref or None, spans):
            url = fs.join(self._working_out, voevent.alert_file_name(alert))
            yield voevent.write_voevent(alert, url)
            self._alerts.inc()


def _obs_id_of_source_list(sop_url: str) -> str:
    """'<working_out>/ECL-SOP-IMA_<OBS_ID>.fits' -> OBS_ID."""
    return fs.basename(sop_url).split("_", 1)[1].rsplit(".", 1)[0]


class WriteRegionFile(beam.DoFn):
    """The URL of an ECL-SOP-IMA -> the URL of its DS9 region file beside it."""

    @isolating("write", obs_id=_obs_id_of_source_list)
    def process(self, sop_url):
        yield write_regions(sop_url)


class WriteAlerts(_ObservationProductWriter):
    """((obs_id, band, occ[, pointing]), SkyProducts) -> a VOEvent 2.0 alert per NEW source."""

    def expand(self, values):
        return self._by_observation(values) | "Write" >> beam.ParDo(
            with_failure_log(WriteAlertFiles(self.working_out), self.failure_log),
            beam.pvalue.AsDict(self.observations), self.failed)
