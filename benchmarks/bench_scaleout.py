"""Scale-out: one campaign on the in-process DirectRunner, on Flink at parallelism 1 and 2, and
on Spark with 1 and 2 worker cores; events per second and speed-up.

    python benchmarks/bench_scaleout.py [--observations 16] [--duration 1200] [--rounds 2]
        [--configurations direct,flink-1,flink-2,spark-1,spark-2] [--out DIR] [--json FILE]

The campaign: `--observations` simulated observations of `--duration` s (the demo's pointing
and orbit, one 0.5 Crab source), products ECL-DET-IMA, ECL-SKY-IMA and ECL-SOP-IMA, default
parameters. Each run is `ecpi_run params.ini --force <options>` in a fresh process, the
options being those `ecpi_engine start` prints, with `--parallelism` / `--sdk_worker_parallelism`
set to the configuration's. Flink: one session cluster of 2 slots serves both parallelisms;
Spark: the cluster is restarted with a worker of 1 or 2 cores. The configurations are run in
turn, `--rounds` times (p1, p2, p1, p2...), so that the load of a shared machine falls on
each alike; the 1-minute load average is recorded beside every run.

Columns: the wall time of `ecpi_run`, the events read per second of it, the time the engine
itself reports for the job (Flink's job duration, Spark's application duration: without the
job server's start and the job's submission), and the speed-ups: parallelism 2 against 1 of the
same engine (the goal: Flink >= 1.6x on 2 cores) and against the DirectRunner.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import psutil  # noqa: E402
from bench_campaign import kind_of, prepare_campaign, timed_run, tree_processes  # noqa: E402

from ecpi_beam import engines  # noqa: E402

PRODUCTS = dict(cali_out=[], bube_out=["ECL-DET-IMA"], imag_out=["ECL-SKY-IMA", "ECL-SOP-IMA"])
CONFIGURATIONS = ("direct", "flink-1", "flink-2", "spark-1", "spark-2")
SUMMARY = re.compile(r"events read (\d+)")


def with_parallelism(options: list[str], parallelism: int) -> list[str]:
    """`ecpi_engine`'s options with the job's and the SDK workers' parallelism set."""
    options = list(options)
    for option in ("--parallelism", "--sdk_worker_parallelism"):
        if option in options:
            options[options.index(option) + 1] = str(parallelism)
    return options


def engine_job_seconds(engine: str, cluster: dict, before: set) -> float | None:
    """The duration the engine reports for the job that ran (the one not in `before`)."""
    ports = cluster["ports"]
    if engine == "flink":
        jobs = engines.get_json(f"http://127.0.0.1:{ports['rest']}/jobs/overview")["jobs"]
        done = [job for job in jobs if job["jid"] not in before]
        return done[-1]["duration"] / 1000 if done else None
    master = engines.get_json(f"http://127.0.0.1:{ports['ui']}/json/")
    done = [app for app in master.get("completedapps", []) if app["id"] not in before]
    return done[-1]["duration"] / 1000 if done else None


def known_jobs(engine: str, cluster: dict) -> set:
    ports = cluster["ports"]
    if engine == "flink":
        jobs = engines.get_json(f"http://127.0.0.1:{ports['rest']}/jobs/overview")["jobs"]
        return {job["jid"] for job in jobs}
    master = engines.get_json(f"http://127.0.0.1:{ports['ui']}/json/")
    return {app["id"] for app in master.get("completedapps", [])}


def cpu_seconds(process: subprocess.Popen, cluster_pids=()) -> dict:
    """Wait for `process`; the CPU seconds used meanwhile by each kind of process of its tree
    and of the cluster's (sampled every 0.5 s: a process's last sample counts)."""
    last: dict[int, tuple[str, float]] = {}
    first: dict[int, float] = {}
    roots = [process.pid, *cluster_pids]
    while process.poll() is None:
        for root, proc in tree_processes(roots):
            try:
                times = proc.cpu_times()
                used = times.user + times.system
                kind = kind_of(" ".join(proc.cmdline()))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            first.setdefault(proc.pid, used if root != process.pid else 0.0)
            last[proc.pid] = (kind, used)
        time.sleep(0.5)
    totals: dict[str, float] = {}
    for pid, (kind, used) in last.items():
        totals[kind] = totals.get(kind, 0.0) + used - first[pid]
    return totals


def run(label: str, params: Path, options: list[str], env: dict, cluster_pids=()) -> dict:
    load = os.getloadavg()[0]
    elapsed, out, cpu = timed_run(label, options, params, env,
                                  lambda process: cpu_seconds(process, cluster_pids))
    events = int(SUMMARY.search(out).group(1))
    print(f"  {label}: {elapsed:.1f} s, {events / elapsed:.3g} events/s (load {load:.1f}); "
          "CPU s " + ", ".join(f"{kind} {used:.0f}" for kind, used in sorted(cpu.items())),
          flush=True)
    return {"configuration": label, "wall_s": elapsed, "events": events, "load": load,
            "cpu_s": cpu}


class Clusters:
    """The clusters of the configurations, started when first needed (Spark: again when the
    number of cores changes), stopped at the end."""

    def __init__(self, state: Path):
        os.environ[engines.STATE_ENV] = str(state)
        self.running: dict[str, int] = {}

    def options(self, engine: str, slots: int) -> tuple[list[str], dict]:
        if self.running.get(engine) not in (None, slots):
            engines.stop(engine)
            del self.running[engine]
        if engine not in self.running:
            free = {port.name: 0 for port in engines.PORTS[engine]}
            engines.start(engine, ports=free, parallelism=slots)
            self.running[engine] = slots
        cluster = engines.running_cluster(engine)
        return cluster["options"], cluster

    def stop(self):
        for engine in list(self.running):
            engines.stop(engine)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, default=16)
    parser.add_argument("--duration", type=float, default=1200.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS))
    parser.add_argument("--out", default=None, help="work folder (kept: simulations reused)")
    parser.add_argument("--json", default=None, help="write every run here")
    args = parser.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="ecpi-scaleout-")).absolute()
    env, params = prepare_campaign(root, args.observations, args.duration, PRODUCTS)
    configurations = args.configurations.split(",")
    clusters = Clusters(root / "engines")
    # a terminated benchmark still stops its clusters (the `finally` below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = []
    try:
        for round_index in range(args.rounds):
            print(f"round {round_index + 1}/{args.rounds}", flush=True)
            for label in configurations:
                if label == "direct":
                    results.append(run(label, params, [], env))
                    continue
                engine, slots = label.split("-")
                slots = int(slots)
                # Flink: one 2-slot cluster for both; Spark: a worker of `slots` cores
                options, cluster = clusters.options(engine, 2 if engine == "flink" else slots)
                before = known_jobs(engine, cluster)
                pids = [int(entry["pid"]) for entry in
                        engines.recorded(engines.state_dir(engine)).values()]
                result = run(label, params, with_parallelism(options, slots), env, pids)
                result["engine_s"] = engine_job_seconds(engine, cluster, before)
                results.append(result)
    finally:
        clusters.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(table(results, configurations, args))
    return 0


def table(results, configurations, args) -> str:
    def median(label, key):
        values = [r[key] for r in results if r["configuration"] == label and r.get(key)]
        return statistics.median(values) if values else None

    events = results[0]["events"]
    lines = [f"{args.observations} observations of {args.duration:.0f} s, {events:.3g} events; "
             f"medians of {args.rounds} round(s); load {min(r['load'] for r in results):.1f} "
             f"to {max(r['load'] for r in results):.1f}", "",
             "| configuration | wall s | events/s | engine's job s | speed-up, 2 against 1 "
             "(wall / job) | speed-up against the DirectRunner (wall) |",
             "|---|---|---|---|---|---|"]
    direct = median("direct", "wall_s")
    for label in configurations:
        wall, job = median(label, "wall_s"), median(label, "engine_s")
        pair = label[:-1] + "1" if label.endswith("-2") else None
        against = ""
        if pair in configurations:
            one_wall, one_job = median(pair, "wall_s"), median(pair, "engine_s")
            against = f"{one_wall / wall:.2f}" + (f" / {one_job / job:.2f}" if job and one_job
                                                  else "")
        lines.append(f"| {label} | {wall:.1f} | {events / wall:.3g} | "
                     f"{f'{job:.1f}' if job else '-'} | {against} | "
                     f"{f'{direct / wall:.2f}' if direct else '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
