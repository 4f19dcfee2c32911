"""CALI throughput: Beam DirectRunner against a plain numpy loop over the same event file.

    python benchmarks/bench_cali.py --events 1e7 [--chunk-size 1000000] [--cache DIR]

The input triplet is simulated once into a cache folder (reused by later runs of the same
size). Each mode runs in its own subprocess so that its peak memory (ru_maxrss of the child)
is its own. Both modes read the EVENTS rows by chunks and calibrate them (kernels/calibrate.py
with the good time); the Beam mode also runs DPCO's per-chunk checks, the reshuffle and Metrics.
Prints one markdown table line per mode.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

# run as a script from a checkout: the package is the folder above this one
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EVENTS_PER_SECOND_ESTIMATE = 4000.0  # the default scenario's count rate, to size the duration


def simulate_input(n_events: int, cache: str) -> str:
    """An observation directory with about n_events events (simulated once, then cached)."""
    from ecpi_beam.caldb import Caldb, default_caldb_dir
    from ecpi_beam.simu import default_scenario, scenario_with, simulate

    directory = os.path.join(cache, f"cali-{n_events}")
    if os.path.exists(os.path.join(directory, "done")):
        return directory
    duration = max(10.0, n_events / EVENTS_PER_SECOND_ESTIMATE)
    scenario = scenario_with(default_scenario(), duration=duration, obs_id="0000000999")
    simulate(scenario, directory, Caldb.open(default_caldb_dir()))
    with open(os.path.join(directory, "done"), "w", encoding="utf-8") as stream:
        stream.write(f"{duration}\n")
    return directory


def run_numpy(obs_dir: str, chunk_size: int) -> dict:
    """Read chunks + calibrate in a plain loop: the floor the pipeline is measured against."""
    from ecpi_beam.caldb import Caldb, default_caldb_dir
    from ecpi_beam.io import events as event_io
    from ecpi_beam.kernels.calibrate import calibrate_events
    from ecpi_beam.kernels.gti import good_time
    from ecpi_beam.transforms.read import inspect_observation

    started = time.perf_counter()
    observation = inspect_observation(obs_dir)
    pixcal = Caldb.open(default_caldb_dir()).pixel_calibration()
    good = good_time(observation)["ALL"]
    layout = event_io.table_layout(observation.evt_url, "EVENTS")
    n_out = 0
    for first, n_rows in event_io.chunk_ranges(observation.n_events, chunk_size):
        events = event_io.read_rows(observation.evt_url, first, n_rows, layout)
        calibrated, _ = calibrate_events(events, pixcal, good)
        n_out += len(calibrated)
    return {"events": observation.n_events, "calibrated": n_out,
            "seconds": time.perf_counter() - started}


def run_beam(obs_dir: str, chunk_size: int, beam_args: list[str]) -> dict:
    """ReadObservation -> Cali on the DirectRunner; counts come back through Metrics."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from ecpi_beam.caldb import default_caldb_dir
    from ecpi_beam.transforms.cali import Cali
    from ecpi_beam.transforms.read import ReadObservation

    started = time.perf_counter()
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", *beam_args]))
    read = pipeline | beam.Create([obs_dir]) | ReadObservation(chunk_size=chunk_size)
    _ = read.chunks | Cali(default_caldb_dir())
    result = pipeline.run()
    result.wait_until_finish()
    totals = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        name = f"{counter.key.metric.namespace}.{counter.key.metric.name}"
        totals[name] = totals.get(name, 0) + counter.committed
    return {"events": totals.get("ecpi.cali.events_in", 0),
            "calibrated": totals.get("ecpi.cali.events_out", 0),
            "seconds": time.perf_counter() - started}


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of the workers it waited for (Linux: kB)."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024.0


def measure(mode: str, obs_dir: str, chunk_size: int, beam_args: list[str]) -> dict:
    """Run one mode in its own subprocess, which reports its time and peak memory."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        command = [sys.executable, os.path.abspath(__file__), "--child", mode, "--obs-dir",
                   obs_dir, "--chunk-size", str(chunk_size), "--report", report.name, *beam_args]
        subprocess.run(command, check=True)
        with open(report.name, encoding="utf-8") as stream:
            return json.load(stream)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=float, default=1e7, help="events to simulate (1e7)")
    parser.add_argument("--chunk-size", type=int, default=1_000_000)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ecpi-bench"),
                        help="folder holding the simulated input between runs")
    parser.add_argument("--modes", default="numpy,beam")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--obs-dir", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args, beam_args = parser.parse_known_args(argv)

    if args.child:
        runner = run_numpy if args.child == "numpy" else (
            lambda d, c: run_beam(d, c, beam_args))
        result = runner(args.obs_dir, args.chunk_size)
        result["peak_mb"] = peak_rss_mb()
        with open(args.report, "w", encoding="utf-8") as stream:
            json.dump(result, stream)
        return 0

    obs_dir = simulate_input(int(args.events), args.cache)
    print("| mode | events | calibrated | seconds | events/s | peak RSS (MB) | chunk size |")
    print("|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        result = measure(mode, obs_dir, args.chunk_size, beam_args)
        rate = result["events"] / result["seconds"]
        print(f"| {mode} | {result['events']:.3g} | {result['calibrated']:.3g} | "
              f"{result['seconds']:.1f} | {rate:.3g} | {result['peak_mb']:.0f} | "
              f"{args.chunk_size} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
