"""Beam's metrics of a finished pipeline, summed by counter (the log of record of a run)."""
from __future__ import annotations

from apache_beam.metrics.metric import MetricsFilter


def metric_totals(result):
    """Counter name -> total over steps, for the summary line (Metrics are the log of record)."""
    totals = {}
    try:
        counters = result.metrics().query(MetricsFilter())["counters"]
    except NotImplementedError:  # the DaskRunner has no metrics yet
        return totals
    for counter in counters:
        name = f"{counter.key.metric.namespace}.{counter.key.metric.name}"
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[name] = totals.get(name, 0) + (value or 0)
    return totals
