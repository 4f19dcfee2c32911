"""Replay a simulated observation as downlinked slices (`ecpi_simulate ... --drip DIR`).

The scenario is simulated once into a staging directory (the simulator and its triplet
writer, unchanged), then cut into slices of `slice_seconds` (naming in io/slices.py and
docs/streaming.md). Slice k, covering [t_k, t_k+1), lands in DIR when the replay clock, running
`speed` times faster than mission time, reaches t_k+1: first its attitude and orbit, then its
events. Each file is written under a temporary name and renamed, so a watcher never sees half
a file. `late` holds some event slices back: {seq: n} writes slice seq's events only after
n more slices have landed, to replay data arriving late; `truncate` lists event slices written
cut short (half their bytes), to replay a damaged file.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Callable

import numpy as np
from astropy.io import fits

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import events as event_io
from ecpi_beam.io.slices import slice_name
from ecpi_beam.simu.simulate import simulate, triplet_paths
from ecpi_beam.simu.writer import (EventFileWriter, common_keywords, primary_hdu, table_hdu,
                                   write_hdus_atomically)

READ_ROWS = 200_000  # events read from the staged file at once: bounds the replay's memory


def _aux_slice(table, t_lo, t_hi):
    """Rows of an attitude or orbit table sampled in [t_lo, t_hi], plus one on each side, so
    that every event time of the slice can be interpolated from the slice alone."""
    time_column = table["TIME"]
    first = max(int(np.searchsorted(time_column, t_lo, side="right")) - 1, 0)
    last = min(int(np.searchsorted(time_column, t_hi, side="left")) + 1, len(table))
    return table[first:last]


def _write_aux(path, extname, rows, columns, keywords):
    hdu = table_hdu(extname, [fits.Column(name, form, unit, array=rows[name])
                              for name, form, unit in columns], keywords)
    write_hdus_atomically(path, [primary_hdu(keywords), hdu])


ATTITUDE_COLUMNS = (("TIME", "D", "s"), ("QPARAM", "4D", None), ("FLAG_ATT", "B", None))
ORBIT_COLUMNS = (("TIME", "D", "s"), ("POSITION", "3D", "m"), ("VELOCITY", "3D", "m/s"),
                 ("FLAG_PVT", "B", None))


class _EventSource:
    """The staged EVENTS rows, read forward by row ranges and cut at slice boundaries."""

    def __init__(self, url):
        self.url = url
        self.layout = event_io.table_layout(url, "EVENTS")
        self.next_row = 0
        self.buffer = np.zeros(0, dtype=event_io.EVENT_DTYPE)

    def until(self, t_hi):
        """The rows with TIME < t_hi not yet returned."""
        while self.next_row < self.layout.n_rows and (
                not len(self.buffer) or self.buffer["TIME"][-1] < t_hi):
            n = min(READ_ROWS, self.layout.n_rows - self.next_row)
            rows = event_io.read_rows(self.url, self.next_row, n, self.layout)
            self.buffer = np.concatenate([self.buffer, rows])
            self.next_row += n
        # back-steps of up to 100 us (ICD) may straddle t_hi: cut at the first row past it
        cut = int(np.searchsorted(self.buffer["TIME"] >= t_hi, True))
        taken, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return taken


def drip(scenario, out_dir, caldb, *, speed: float = 10.0, slice_seconds: float = 10.0,
         late: dict | None = None, truncate=(), sleep: Callable[[float], None] = time.sleep,
         on_slice: Callable | None = None):
    """Write `scenario` into out_dir as timed slices; returns the simulator's Truth.

    on_slice(seq, kind, path, wall_time) is called after each file lands (benchmarks).
    """
    if speed <= 0:
        raise EcpiError(f"--speed: got {speed}, expected a positive factor (10 = 10x real time)")
    if slice_seconds <= 0:
        raise EcpiError(f"--slice-seconds: got {slice_seconds}, expected a positive duration")
    late = dict(late or {})
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ecpi-drip-") as staging:
        truth = simulate(scenario, staging, caldb)
        paths = triplet_paths(staging, scenario.name)
        attitude, _ = event_io.read_table(paths["attitude"], "ATTITUDE")
        orbit, _ = event_io.read_table(paths["orbit"], "ORBIT")
        gti = np.asarray(truth.gti, dtype=float).reshape(-1, 2)
        source = _EventSource(paths["events"])
        edges = np.append(np.arange(scenario.tstart, scenario.tstop, slice_seconds),
                          scenario.tstop)
        started = time.monotonic()
        held = []  # (release after seq, seq, writer args)
        for seq, (t_lo, t_hi) in enumerate(zip(edges[:-1], edges[1:])):
            wait = started + (t_hi - scenario.tstart) / speed - time.monotonic()
            if wait > 0:
                sleep(wait)
            obs_id = scenario.obs_id
            keywords = common_keywords(obs_id, t_lo, t_hi)
            for kind, extname, table, columns in (("att", "ATTITUDE", attitude, ATTITUDE_COLUMNS),
                                                  ("orb", "ORBIT", orbit, ORBIT_COLUMNS)):
                path = os.path.join(out_dir, slice_name(kind, obs_id, seq))
                _write_aux(path, extname, _aux_slice(table, t_lo, t_hi), columns, keywords)
                _landed(on_slice, seq, kind, path)
            event_slice = (seq, obs_id, t_lo, t_hi, source.until(t_hi),
                           _clip(gti, t_lo, t_hi), seq in truncate)
            if seq in late:
                held.append((seq + late[seq], event_slice))
            else:
                _write_events(out_dir, *event_slice, on_slice=on_slice)
            for release in [item for item in held if item[0] <= seq]:
                held.remove(release)
                _write_events(out_dir, *release[1], on_slice=on_slice)
        for _, event_slice in held:
            _write_events(out_dir, *event_slice, on_slice=on_slice)
    return truth


def _clip(gti, t_lo, t_hi):
    clipped = np.column_stack([np.maximum(gti[:, 0], t_lo), np.minimum(gti[:, 1], t_hi)])
    return clipped[clipped[:, 1] > clipped[:, 0]]


def _write_events(out_dir, seq, obs_id, t_lo, t_hi, rows, gti, truncated=False,
                  on_slice=None):
    path = os.path.join(out_dir, slice_name("evt", obs_id, seq))
    target = path + ".cut" if truncated else path
    writer = EventFileWriter(target, common_keywords(obs_id, t_lo, t_hi, instrume="ECLAIRs"))
    try:
        writer.append(rows)
        writer.close(gti)
    except BaseException:
        writer.abort()
        raise
    if truncated:  # the damaged file lands, as a cut transfer would leave it
        with open(target, "r+b") as stream:
            stream.truncate(os.path.getsize(target) // 2)
        os.replace(target, path)
    _landed(on_slice, seq, "evt", path)


def _landed(on_slice, seq, kind, path):
    if on_slice is not None:
        on_slice(seq, kind, path, time.time())
