"""Failure isolation in the graph: an observation that fails in some stage is recorded, and the
others go on. The records and failures.jsonl live in io/failures.py; here are the Beam hooks.

DPCO failures travel in the graph (ReadObservation's `failures`) and are recorded by
`RecordFailures`. A later failure of one element (a chunk, an image, a product) is caught where
it happens by `isolating`, recorded against its observation, and the element is dropped. Each
product file that is written is still whole.
"""
from __future__ import annotations

import dataclasses
import functools

import apache_beam as beam
from apache_beam.metrics import Metrics

from ecpi_beam.io.failures import FailureLog
from ecpi_beam.transforms.base import DataclassTransform

NAMESPACE = "ecpi.failures"


def obs_id_of(element) -> str:
    """The obs_id of an element: a chunk descriptor, (obs_id, ...) or ((obs_id, ...), ...)."""
    if hasattr(element, "obs_id"):
        return str(element.obs_id)
    key = element[0]
    return str(key[0] if isinstance(key, tuple) else key)


def isolating(stage: str, obs_id=obs_id_of):
    """Decorates a DoFn's `process`: with a `failure_log` set on the DoFn, an exception for one
    element is recorded against its observation instead of stopping the pipeline.

    The observation is the one a failed product write names (io/products.write_product sets
    it: a campaign's mosaic is 'MOSAIC'), else `obs_id(element)`."""
    # the DoFns' progress is marked here too (io/progress.py): one element done per call
    def decorate(process):
        @functools.wraps(process)
        def guarded(self, element, *args, **kwargs):
            log = getattr(self, "failure_log", None)
            if log is None:
                yield from process(self, element, *args, **kwargs)
                return
            try:
                yield from process(self, element, *args, **kwargs)
            except Exception as error:  # noqa: BLE001 - the point is to isolate any failure
                log.record(getattr(error, "obs_id", None) or obs_id(element), stage, error)
                Metrics.counter(NAMESPACE, stage).inc()
            if log.progress is not None:  # one element of this step done (failed ones too)
                log.progress.mark(type(self).__name__)
        return guarded
    return decorate


def with_failure_log(dofn, failure_log: FailureLog | None):
    dofn.failure_log = failure_log
    return dofn


@dataclasses.dataclass(eq=False)
class RecordFailures(DataclassTransform):
    """Failure records (DPCO's) -> the run's failure log; yields nothing."""

    working_out: str

    def expand(self, failures):
        log = FailureLog(self.working_out)
        return failures | "Record" >> beam.FlatMap(lambda record: log.write_record(record) or [])
