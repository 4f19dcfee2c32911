"""Time-interval algebra for good-time intervals (ICD section 4, ECL-GTI-CAL / ECL-GTI-UBC).

An interval set is a float array of shape (n, 2) of [start, stop) pairs. Every function accepts
unsorted, overlapping or empty intervals and returns a sorted, disjoint, non-empty set.
"""
from __future__ import annotations

import numpy as np


def _as_intervals(intervals) -> np.ndarray:
    return np.asarray(intervals, dtype=float).reshape(-1, 2)


def union(intervals) -> np.ndarray:
    """Sorted, disjoint union of intervals; touching intervals are merged, empty ones dropped."""
    a = _as_intervals(intervals)
    a = a[a[:, 1] > a[:, 0]]
    if len(a) == 0:
        return np.zeros((0, 2))
    a = a[np.argsort(a[:, 0], kind="stable")]
    reach = np.maximum.accumulate(a[:, 1])
    # a new group starts where an interval begins after everything before it has ended
    starts_group = np.ones(len(a), dtype=bool)
    starts_group[1:] = a[1:, 0] > reach[:-1]
    group = np.cumsum(starts_group) - 1
    stops = np.zeros(group[-1] + 1)
    np.maximum.at(stops, group, a[:, 1])
    return np.column_stack([a[starts_group, 0], stops])


def intersect(a, b) -> np.ndarray:
    """Intersection of two interval sets, in O(n + m + output) without an n x m table."""
    a, b = union(a), union(b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2))
    # the b intervals overlapping a[k] are b[first[k]:last[k]]
    first = np.searchsorted(b[:, 1], a[:, 0], side="right")
    last = np.searchsorted(b[:, 0], a[:, 1], side="left")
    counts = np.clip(last - first, 0, None)
    a_index = np.repeat(np.arange(len(a)), counts)
    b_index = first[a_index] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts,
                                                                    counts))
    out = np.column_stack([np.maximum(a[a_index, 0], b[b_index, 0]),
                           np.minimum(a[a_index, 1], b[b_index, 1])])
    return out[out[:, 1] > out[:, 0]]


def duration(intervals) -> float:
    """Total length covered by the intervals (overlaps counted once)."""
    merged = union(intervals)
    return float(np.sum(merged[:, 1] - merged[:, 0]))


def mask_times(times, intervals) -> np.ndarray:
    """True for each time inside the intervals (start <= t < stop)."""
    merged = union(intervals)
    t = np.asarray(times, dtype=float)
    if t.ndim == 1 and len(t) > 1 and bool(np.all(t[1:] >= t[:-1])):
        return _mask_sorted_times(t, merged)
    index = np.searchsorted(merged[:, 0], t, side="right") - 1
    inside = index >= 0
    inside[inside] = t[inside] < merged[index[inside], 1]
    return inside


def _mask_sorted_times(t, merged) -> np.ndarray:
    """mask_times for non-decreasing times (event chunks are): the intervals are located in the
    times, O(n_intervals log n), and their slices set, instead of one search per time."""
    inside = np.zeros(len(t), dtype=bool)
    # only the intervals that reach into [t[0], t[-1]] can hold a time
    first = np.searchsorted(merged[:, 1], t[0], side="right")
    last = np.searchsorted(merged[:, 0], t[-1], side="right")
    nearby = merged[first:last]
    starts = np.searchsorted(t, nearby[:, 0], side="left")  # first time >= start
    stops = np.searchsorted(t, nearby[:, 1], side="left")  # first time >= stop
    for start, stop in zip(starts.tolist(), stops.tolist()):
        inside[start:stop] = True
    return inside


def from_boolean_samples(times, good) -> np.ndarray:
    """Intervals where a sampled flag is true; each sample reigns up to the midpoints with its
    neighbours, and the set spans at most [times[0], times[-1]] (no extrapolation)."""
    t = np.asarray(times, dtype=float)
    good = np.asarray(good, dtype=bool)
    if t.shape != good.shape or t.ndim != 1:
        raise ValueError("times and good must be 1-d arrays of the same length")
    if len(t) < 2:
        return np.zeros((0, 2))
    boundaries = np.concatenate([[t[0]], 0.5 * (t[1:] + t[:-1]), [t[-1]]])
    edges = np.diff(np.concatenate([[0], good.astype(np.int8), [0]]))
    run_first = np.flatnonzero(edges == 1)
    run_last = np.flatnonzero(edges == -1) - 1
    return union(np.column_stack([boundaries[run_first], boundaries[run_last + 1]]))
