"""`make benchmark`: the figures of BENCHMARKS.md in one go, as ratios measured side by side.

    python benchmarks/run_all.py [--events 1e7] [--repeat 3] [--cache DIR] [--out DIR]
        [--quick] [--memory-events 3e7 ...]

1. simulates the default scenario (or reuses it from the cache folder);
2. stage ratios in one process (bench_kernels.py): event path per core against the minimal
   bare-numpy chain, one balanced correlation against one FFT correlation, import time;
3. whole processes, alternating (bench_chain.py): the minimal bare-numpy chain
   (bare_numpy_minimal.py, no project code), Beam's own floor (the same minimal chain as one
   Beam Map, beam_floor.py), the project's kernels without Beam (bare_numpy_chain.py) and
   `ecpi_run`, on the same file: five bands, PEO, background 'shape', ECL-DET-IMA +
   ECL-SKY-IMA + ECL-SOP-IMA;
4. a reprocessing campaign (bench_chain.py --campaign): 16 observations of 600 s, one
   `ecpi_run` against the minimal bare chain looping over the same triplets, alternating
   (--quick: 2 observations of 120 s);
   with --memory-events: peak memory of `ecpi_run` at more observation sizes;
5. the survey mosaic (bench_mosaic.py): the campaign mosaic of 100, 300 and 1000 observations'
   stored accumulators (synthetic, made once in the cache), time per observation and peak
   memory (--quick: 10 and 30; --mosaic-observations to choose).
6. scale-out (bench_scaleout.py): a campaign of 16 observations of 3600 s (1.8e8 events) on
   the DirectRunner, on Flink at parallelism 1 and 2 and on Spark with 1 and 2 worker cores,
   alternating
   (`make engines` first; --no-scaleout leaves it out).
Writes <out>/results.md (the tables) and <out>/results.json (every run); --quick is a smoke run
(1e6 events, one repetition). Timings on a shared machine are noisy: read the ratios, the CPU
column and the load column, and run again on a quiet machine for absolute figures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CACHE = os.path.join(HERE, "output", "cache")  # bench_chain's


def _captured(script, args):
    """Run a benchmark script in its own process, echo and return its standard output.

    Its own process: this one stays small, so that the peak RSS the kernel reports for the
    measured children (inherited through fork) is theirs, not ours."""
    done = subprocess.run([sys.executable, os.path.join(HERE, script), *args], check=True,
                          stdout=subprocess.PIPE, text=True)
    print(done.stdout, end="", flush=True)
    return done.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=float, default=1e7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    parser.add_argument("--out", default=os.path.join(HERE, "output"))
    parser.add_argument("--memory-events", type=float, action="append", default=[],
                        help="also measure ecpi_run's peak memory at this size (repeatable)")
    parser.add_argument("--mosaic-observations", type=int, action="append", default=[],
                        help="campaign sizes of the survey mosaic (default 100, 300, 1000)")
    parser.add_argument("--quick", action="store_true", help="1e6 events, one repetition")
    parser.add_argument("--no-scaleout", action="store_true",
                        help="leave out the Flink/Spark scale-out (bench_scaleout.py)")
    parser.add_argument("--scaleout-observations", type=int, default=16)
    parser.add_argument("--scaleout-duration", type=float, default=3600.0)
    parser.add_argument("--scaleout-rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.repeat = 1e6, 1
        args.scaleout_observations, args.scaleout_duration = 2, 120.0
        args.scaleout_rounds = 1
    mosaic_sizes = args.mosaic_observations or ([10, 30] if args.quick else [100, 300, 1000])
    os.makedirs(args.out, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    n_events = str(int(args.events))
    sections = [f"# Benchmark results ({started}, {os.cpu_count()} cores, "
                f"load {os.getloadavg()[0]:.1f} at the start)"]

    print("== stages, in one process", flush=True)
    kernels_json = os.path.join(args.out, "kernels.json")
    sections.append("## Stages, in one process\n\n```\n" + _captured(
        "bench_kernels.py", ["--events", n_events, "--repeat", str(max(args.repeat, 3)),
                             "--cache", args.cache, "--json", kernels_json]) + "```")

    print("== whole processes, alternating", flush=True)
    chain_json = os.path.join(args.out, "chain.json")
    sections.append("## Whole processes, alternating\n\n" + _captured(
        "bench_chain.py", ["--events", n_events, "--products", "det-sky", "--bands", "five",
                           "--modes", "minimal,beam-floor,numpy,beam", "--repeat", str(args.repeat),
                           "--cache", args.cache, "--json", chain_json]))
    runs = {"kernels": kernels_json, "chain": chain_json}

    print("== a reprocessing campaign against the bare loop", flush=True)
    campaign_json = os.path.join(args.out, "campaign.json")
    observations, duration = ("2", "120") if args.quick else ("16", "600")
    sections.append("## A reprocessing campaign against the bare loop\n\n" + _captured(
        "bench_chain.py", ["--campaign", observations, "--duration", duration,
                           "--products", "det-sky", "--bands", "five",
                           "--modes", "minimal,beam", "--repeat", str(args.repeat),
                           "--cache", args.cache, "--json", campaign_json]))
    runs["campaign"] = campaign_json

    if args.memory_events:
        print("== memory of ecpi_run", flush=True)
        memory_json = os.path.join(args.out, "memory.json")
        sizes = [item for size in args.memory_events for item in ("--events", str(int(size)))]
        sections.append("## Memory of ecpi_run\n\n" + _captured(
            "bench_chain.py", [*sizes, "--products", "det-sky", "--bands", "five",
                               "--modes", "beam", "--repeat", "1", "--cache", args.cache,
                               "--json", memory_json]))
        runs["memory"] = memory_json

    print("== the survey mosaic", flush=True)
    mosaic_json = os.path.join(args.out, "mosaic.json")
    sizes = [item for size in mosaic_sizes for item in ("--observations", str(size))]
    sections.append("## The survey mosaic\n\n```\n" + _captured(
        "bench_mosaic.py", [*sizes, "--cache", args.cache, "--json", mosaic_json]) + "```")
    runs["mosaic"] = mosaic_json

    if not args.no_scaleout:
        print("== scale-out on Flink and Spark", flush=True)
        scaleout_json = os.path.join(args.out, "scaleout.json")
        sections.append("## Scale-out on Flink and Spark\n\n" + _captured(
            "bench_scaleout.py", ["--observations", str(args.scaleout_observations),
                                  "--duration", str(args.scaleout_duration),
                                  "--rounds", str(args.scaleout_rounds),
                                  "--out", os.path.join(args.out, "scaleout"),
                                  "--json", scaleout_json]))
        runs["scaleout"] = scaleout_json

    results = {}
    for name, path in runs.items():
        with open(path, encoding="utf-8") as stream:
            results[name] = json.load(stream)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as stream:
        json.dump(results, stream, indent=1)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as stream:
        stream.write("\n\n".join(sections) + "\n")
    print(f"written {os.path.join(args.out, 'results.md')} and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
