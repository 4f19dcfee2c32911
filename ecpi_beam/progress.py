"""ecpi_run's progress on a terminal: one line, rewritten in place, while a pipeline runs.

    ecpi_run [CALI] read 12/15 chunks, calibrated 10/15, binned 8/15, sky images 0/10,
    products 2; 0:00:12 elapsed, ETA 0:00:09

It appears once the pipeline has run for DELAY_S seconds (a short run stays silent) and only
when stderr is a terminal (a log file or a pipe gets none of it); it counts the progress marks
the DoFns leave (io/progress.py), so it works on every runner whose workers write to a local
working_out. The line is cleared when the pipeline ends.
"""
from __future__ import annotations

import contextlib
import math
import sys
import threading
import time

from ecpi_beam.io import fs
from ecpi_beam.io.progress import ProgressMarks

DELAY_S = 3.0  # runs shorter than this show no progress
INTERVAL_S = 0.5
# (DoFn whose elements are counted, what the line calls them, the component it belongs to)
STEPS = (("ReadEventChunk", "read", "DPCO"), ("CalibrateChunk", "calibrated", "CALI"),
         ("BinDetectorImages", "binned", "BUBE"), ("MakeSkyImages", "sky images", "IMAG"),
         ("WeightEvents", "weighted", "SPEX"))
WRITERS = ("WriteProductFile", "FinalizeEventFile", "WriteGtiProduct", "WriteSourceProducts",
           "WriteMosaicProduct")


def wanted(working_out: str, stream=None) -> bool:
    """A terminal to show it on, and a working_out whose marks can be listed cheaply."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and fs.is_local(working_out)


def expected_elements(params, observation_dirs) -> dict:
    """DoFn -> how many elements it will see: chunks per observation from the EVENTS headers,
    sky images per observation from the bands and occultation types."""
    from ecpi_beam.io.events import table_layout
    from ecpi_beam.transforms.dpco import discover_triplet

    chunks = 0
    for obs_dir in observation_dirs:
        with contextlib.suppress(Exception):  # unreadable: DPCO reports it; not counted
            n_rows = table_layout(discover_triplet(obs_dir).evt, "EVENTS").n_rows
            chunks += math.ceil(n_rows / params.cali.chunk_size)
    imaging = bool(params.imag.out_files or params.mosa.out_files or params.spex.out_files)
    expected = {"ReadEventChunk": chunks, "CalibrateChunk": chunks}
    if params.bube.out_files or imaging:
        expected["BinDetectorImages"] = chunks
    if imaging:
        expected["MakeSkyImages"] = (len(observation_dirs) * len(params.bube.energy_channels)
                                     * len(params.bube.ear_occ_bub))
    if params.spex.out_files:
        expected["WeightEvents"] = chunks
    return expected


def progress_text(counts, expected: dict, elapsed: float) -> str:
    parts, stage, done, total = [], None, 0, 0
    for step, label, component in STEPS:
        if step not in expected:
            continue
        n, of = min(counts.get(step, 0), expected[step]), expected[step]
        parts.append(f"{label} {n}/{of}" + (" chunks" if not parts else ""))
        done, total = done + n, total + of
        if stage is None and n < of:
            stage = component
    written = sum(counts.get(step, 0) for step in WRITERS)
    parts.append(f"products {written}")
    fraction = done / total if total else 0.0
    eta = (_clock(elapsed * (1.0 - fraction) / fraction) if fraction > 0.02 else "--:--:--")
    return (f"ecpi_run [{stage or 'WRITE'}] " + ", ".join(parts)
            + f"; {_clock(elapsed)} elapsed, ETA {eta}")


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0.0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@contextlib.contextmanager
def shown(marks: ProgressMarks | None, expected: dict, stream=None, delay_s: float | None = None):
    """While the body runs, the progress line on `stream` (stderr); nothing without marks."""
    if marks is None:
        yield
        return
    stream = stream or sys.stderr
    delay_s = DELAY_S if delay_s is None else delay_s
    started, stop, width = time.monotonic(), threading.Event(), [0]

    def draw():
        while not stop.wait(INTERVAL_S):
            elapsed = time.monotonic() - started
            if elapsed < delay_s:
                continue
            text = progress_text(marks.counts(), expected, elapsed)
            stream.write("\r" + text.ljust(width[0]))
            stream.flush()
            width[0] = len(text)

    thread = threading.Thread(target=draw, name="ecpi-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if width[0]:  # the line is cleared: the summary line says what was done
            stream.write("\r" + " " * width[0] + "\r")
            stream.flush()
        marks.clear()
