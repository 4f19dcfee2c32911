"""Streaming latency and memory: `python benchmarks/streaming.py [--duration S] [--speed X]
[--runner prism|flink]`.

A simulated observation (the demo's pointing, CXB + internal background, a GRB of peak
3 ph cm-2 s-1 at mid-observation, 4 deg off axis) is dripped as 10 s slices into a watched
directory while `ecpi_run --streaming` runs with the default [stream] windows
(20/80/320/1280 s): on Beam's Prism runner (the default local runner), or on a local Flink
session cluster started here by `ecpi_engine start flink` (free ports) with the options it
prints. The drip starts once the watch has started (its stream-status.json), so the start-up
of the runner is measured apart. Prints the machine's load, the start-up, the latency from
the landing of the slice holding the burst's peak to the first alert, and the peak memory of
every process involved (sampled every 0.2 s).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_campaign import kind_of, tree_memory  # noqa: E402

from ecpi_beam import instrument  # noqa: E402
from ecpi_beam.caldb import Caldb, default_caldb_dir  # noqa: E402
from ecpi_beam.io.slices import slice_name  # noqa: E402
from ecpi_beam.params import params_text  # noqa: E402
from ecpi_beam.pipelines.stream import STATUS_FILE  # noqa: E402
from ecpi_beam.simu import default_scenario, scenario_with  # noqa: E402
from ecpi_beam.simu.drip import drip  # noqa: E402

SLICE_S = 10.0


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


def alert_window(path) -> tuple[float, float]:
    """(Window_Start, Window_Length) of an alert file."""
    import voeventparse

    with open(path, "rb") as stream:
        window = voeventparse.get_grouped_params(voeventparse.load(stream))["Time_Window"]
    return float(window["Window_Start"]["value"]), float(window["Window_Length"]["value"])


class MemorySampler(threading.Thread):
    """Peak RSS (MiB) per kind of process, over the trees of `pids`, every 0.2 s."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids = list(pids)
        self.peaks: dict[str, float] = {}
        self.total = 0.0
        self.series: list[tuple[float, float]] = []  # (wall time, RSS of all processes)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.2):
            total = 0.0
            for command, rss in tree_memory(self.pids).values():
                kind = ("prism" if "prism" in command.split(" ")[0] else
                        "ecpi_run (driver)" if "ecpi_beam.run" in command else kind_of(command))
                total += rss
                self.peaks[kind] = max(self.peaks.get(kind, 0.0), rss)
            self.total = max(self.total, total)
            self.series.append((time.time(), total))

    def at(self, wall: float) -> float:
        """RSS of all processes (MiB) sampled last before `wall`."""
        before = [total for when, total in self.series if when <= wall]
        return before[-1] if before else 0.0


def start_flink(state: Path) -> tuple[list[str], list[int]]:
    """`ecpi_engine start flink` on free ports: (the ecpi_run options, the cluster's pids)."""
    from ecpi_beam import engines

    env = {**os.environ, engines.STATE_ENV: str(state)}
    started = subprocess.run([sys.executable, "-m", "ecpi_beam.engines", "start", "flink",
                              "--rest-port", "0", "--rpc-port", "0", "--worker-pool-port", "0"],
                             env=env, capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        raise SystemExit(f"ecpi_engine start flink failed:\n{started.stderr}")
    pids = [entry["pid"] for entry in engines.recorded(state / "flink").values()]
    return started.stdout.strip().splitlines()[-1].split(), pids


def stop_flink(state: Path) -> None:
    from ecpi_beam import engines

    subprocess.run([sys.executable, "-m", "ecpi_beam.engines", "stop", "flink"],
                   env={**os.environ, engines.STATE_ENV: str(state)}, timeout=120)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--runner", choices=("prism", "flink"), default="prism")
    args = parser.parse_args(argv)
    print(f"load at start: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} "
          f"{os.getloadavg()[2]:.1f} (1, 5, 15 min; {os.cpu_count()} cores)")
    root = Path(tempfile.mkdtemp(prefix="ecpi-stream-bench-"))
    watched, out = root / "in", root / "out"
    watched.mkdir()
    out.mkdir()
    (root / "params.ini").write_text(params_text(str(watched), str(out), default_caldb_dir()))
    runner_options, cluster = [], []
    if args.runner == "flink":
        runner_options, cluster = start_flink(root / "engines")
    try:
        launched = time.time()
        runner = subprocess.Popen([sys.executable, "-m", "ecpi_beam.run",
                                   str(root / "params.ini"), "--streaming",
                                   "--stream_idle_timeout", "30", *runner_options],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        sampler = MemorySampler([runner.pid, *cluster])
        sampler.start()
        while not (out / STATUS_FILE).exists():
            if runner.poll() is not None:
                raise SystemExit("ecpi_run --streaming ended before it watched anything")
            time.sleep(0.2)
        startup = time.time() - launched
        landed = {}
        scenario = burst_scenario(args.duration)
        started = time.time()
        drip(scenario, str(watched), Caldb.open(default_caldb_dir()), speed=args.speed,
             slice_seconds=SLICE_S,
             on_slice=lambda seq, kind, path, wall: landed.__setitem__((seq, kind), wall))
        dripped = time.time()
        stdout, _ = runner.communicate(timeout=args.duration / args.speed + 900)
        sampler.stop.set()
        sampler.join()
    finally:
        if cluster:
            stop_flink(root / "engines")
    peak_seq = int(args.duration / 2 // SLICE_S)
    alerts = sorted((out / "alerts").glob("*_0.xml"), key=os.path.getmtime)
    print(stdout.strip())
    memory = ", ".join(f"{kind} {mib:.0f}" for kind, mib in sorted(sampler.peaks.items()))
    first_landed = min(landed.values())
    quarters = [first_landed + q * (dripped - first_landed) / 4 for q in (1, 2, 3, 4)]
    print(f"runner {args.runner}: watching {startup:.1f} s after launch; peak RSS (MiB): "
          f"{memory}; all processes together {sampler.total:.0f} MiB, at 1/4, 1/2, 3/4 and "
          f"the end of the drip: {', '.join(f'{sampler.at(t):.0f}' for t in quarters)} MiB")
    if alerts:
        first = os.path.getmtime(alerts[0])
        start, length = alert_window(alerts[0])
        last_seq = int(np.ceil((start + length - scenario.tstart) / SLICE_S)) - 1
        print(f"duration {args.duration:g} s at {args.speed:g}x: first alert (window "
              f"{start - scenario.tstart:g}+{length:g} s) {first - landed[(peak_seq, 'evt')]:+.1f} s "
              f"after the peak slice ({slice_name('evt', scenario.obs_id, peak_seq)}) landed, "
              f"{first - landed[(last_seq, 'evt')]:+.1f} s after the window's last slice; "
              f"{len(alerts)} alert(s); wall {time.time() - started:.0f} s")
    else:
        print("no alert")
    print(f"load at end: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} "
          f"{os.getloadavg()[2]:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
