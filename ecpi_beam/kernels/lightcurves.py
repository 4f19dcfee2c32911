"""SPEX: mask-weighted source light curves in good time (OGIP/93-003; docs/spex.md).

Events carry the balanced mask weights of kernels/spectra.py; a bin's counts are the sum of
its events' weights, its error sqrt(sum W^2). Bins of width TIMEDEL are laid from the start of
the good time; FRACEXP is the fraction of each bin inside the good time, bins with none are left
out, and RATE = counts / (TIMEDEL x FRACEXP).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import intervals


@dataclass(frozen=True, eq=False)
class LightCurve:
    time: np.ndarray  # bin centres (mission TIME, s)
    timedel: float  # s
    counts: np.ndarray  # net source counts per bin
    counts_err: np.ndarray
    fracexp: np.ndarray  # fraction of the bin in good time

    @property
    def rate(self) -> np.ndarray:
        return self.counts / (self.timedel * self.fracexp)

    @property
    def error(self) -> np.ndarray:
        return self.counts_err / (self.timedel * self.fracexp)


def bin_exposure(edges, gti) -> np.ndarray:
    """Seconds of good time in each bin [edges[k], edges[k+1])."""
    edges = np.asarray(edges, dtype=float)
    gti = np.asarray(gti, dtype=float).reshape(-1, 2)
    lo = np.maximum(edges[:-1, None], gti[None, :, 0])
    hi = np.minimum(edges[1:, None], gti[None, :, 1])
    return np.clip(hi - lo, 0.0, None).sum(axis=1)


def bin_edges(gti, time_bin: float) -> np.ndarray:
    """Edges of bins of `time_bin` s from the first good time to past the last."""
    gti = np.asarray(gti, dtype=float).reshape(-1, 2)
    if not len(gti):
        raise EcpiError("no good time: no light curve can be made")
    if not time_bin > 0:
        raise EcpiError(f"[spex] time_bin = {time_bin}: expected a positive number of seconds")
    start, stop = float(gti[:, 0].min()), float(gti[:, 1].max())
    n_bins = max(1, int(np.ceil((stop - start) / time_bin - 1e-9)))
    return start + time_bin * np.arange(n_bins + 1)


def binned_sums(times, event_weights, gti, edges):
    """(sum W, sum W^2) per bin of the events inside the good time."""
    times = np.asarray(times, dtype=float)
    weights = np.asarray(event_weights, dtype=float)
    n_bins = len(edges) - 1
    keep = intervals.mask_times(times, gti)
    index = np.searchsorted(edges, times[keep], side="right") - 1
    valid = (index >= 0) & (index < n_bins)
    index, w = index[valid], weights[keep][valid]
    return (np.bincount(index, weights=w, minlength=n_bins),
            np.bincount(index, weights=w**2, minlength=n_bins))


def finish_light_curve(edges, counts, variance, gti) -> LightCurve:
    """The bins with good time, their FRACEXP, counts and errors."""
    edges = np.asarray(edges, dtype=float)
    time_bin = float(edges[1] - edges[0])
    fracexp = bin_exposure(edges, gti) / time_bin
    keep = fracexp > 1e-9
    return LightCurve(time=(0.5 * (edges[:-1] + edges[1:]))[keep], timedel=time_bin,
                      counts=np.asarray(counts, float)[keep],
                      counts_err=np.sqrt(np.asarray(variance, float)[keep]),
                      fracexp=np.clip(fracexp[keep], 0.0, 1.0))


def weighted_light_curve(times, event_weights, gti, time_bin: float) -> LightCurve:
    """Bins of `time_bin` s over the good time; events outside it are not counted."""
    edges = bin_edges(gti, time_bin)
    return finish_light_curve(edges, *binned_sums(times, event_weights, gti, edges), gti)
