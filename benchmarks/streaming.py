"""Streaming latency and memory: `python benchmarks/streaming.py [--duration S] [--speed X]`.

A simulated observation (the demo's pointing, CXB + internal background, a GRB of peak
3 ph cm-2 s-1 at mid-observation, 4 deg off axis) is dripped as 10 s slices into a watched
directory while `ecpi_run --streaming` runs with the default [stream] windows
(20/80/320/1280 s). Prints the latency from the landing of the slice holding the burst's
peak to the first alert, and the peak memory (max RSS) of the ecpi_run process.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.io.slices import slice_name
from ecpi_beam.params import params_text
from ecpi_beam.simu import default_scenario, scenario_with
from ecpi_beam.simu.drip import drip


def burst_scenario(duration: float):
    base = default_scenario()
    pointing = base.resolved_pointings()[0]
    quaternion = instrument.quaternion_from_pointing(pointing.ra, pointing.dec, pointing.roll)
    los = np.array([1.0, np.tan(np.radians(4.0)), np.tan(np.radians(-3.0))])
    ra, dec = instrument.los_to_radec(los / np.linalg.norm(los), quaternion)
    return scenario_with(base, name="bench_stream", obs_id="0000000018", seed=18,
                         duration=duration, sources=[],
                         grbs=[dict(name="GRB", ra=float(ra), dec=float(dec),
                                    t_peak=duration / 2, peak_flux=3.0, rise=1.0, decay=8.0)])


SLICE_S = 10.0


def alert_window(path) -> tuple[float, float]:
    """(Window_Start, Window_Length) of an alert file."""
    import voeventparse

    with open(path, "rb") as stream:
        window = voeventparse.get_grouped_params(voeventparse.load(stream))["Time_Window"]
    return float(window["Window_Start"]["value"]), float(window["Window_Length"]["value"])


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--speed", type=float, default=10.0)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ecpi-stream-bench-"))
    watched, out = root / "in", root / "out"
    watched.mkdir()
    out.mkdir()
    (root / "params.ini").write_text(params_text(str(watched), str(out), default_caldb_dir()))
    runner = subprocess.Popen([sys.executable, "-m", "ecpi_beam.run", str(root / "params.ini"),
                               "--streaming", "--stream_idle_timeout", "15"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    landed = {}
    scenario = burst_scenario(args.duration)
    started = time.time()
    drip(scenario, str(watched), Caldb.open(default_caldb_dir()), speed=args.speed,
         slice_seconds=SLICE_S,
         on_slice=lambda seq, kind, path, wall: landed.__setitem__((seq, kind), wall))
    stdout, _ = runner.communicate(timeout=args.duration / args.speed + 600)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    peak_seq = int(args.duration / 2 // SLICE_S)
    alerts = sorted((out / "alerts").glob("*_0.xml"), key=os.path.getmtime)
    print(stdout.strip())
    if alerts:
        first = os.path.getmtime(alerts[0])
        start, length = alert_window(alerts[0])
        last_seq = int(np.ceil((start + length - scenario.tstart) / SLICE_S)) - 1
        print(f"duration {args.duration:g} s at {args.speed:g}x: first alert (window "
              f"{start - scenario.tstart:g}+{length:g} s) {first - landed[(peak_seq, 'evt')]:+.1f} s "
              f"after the peak slice ({slice_name('evt', scenario.obs_id, peak_seq)}) landed, "
              f"{first - landed[(last_seq, 'evt')]:+.1f} s after the window's last slice; "
              f"{len(alerts)} alert(s); ecpi_run max RSS {peak_rss_mb:.0f} MB; "
              f"wall {time.time() - started:.0f} s")
    else:
        print(f"no alert; ecpi_run max RSS {peak_rss_mb:.0f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
