"""A campaign of N simulated observations on several engines: observations/hour, peak memory.

    python benchmarks/bench_campaign.py [--observations 20] [--duration 60] [--out DIR]
        [--engines inprocess,multiprocess,pool]

Engines: `inprocess` (DirectRunner, one process, waves of 4 observations: the default),
`inprocess-onewave` (the same as one pipeline, `--campaign_batch 0`), `multiprocess`
(DirectRunner, 2 worker processes), `pool` (Beam's portable job service with the EXTERNAL
worker pool that `ecpi_engine start flink` runs; the cluster is started and stopped here),
`flink` / `spark` (FlinkRunner / SparkRunner on the local clusters; `make engines` first;
bench_scaleout.py measures their scale-out). Each run is `ecpi_run` in a subprocess with
`--force`; the resident memory of every process of its tree (and of the cluster's) is sampled
every 0.2 s.
Prints a Markdown table (BENCHMARKS.md, "Campaigns on engines").
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pipeline_fixtures import simulate_observation, write_params  # noqa: E402

from ecpi_beam import engines  # noqa: E402

PRODUCTS = dict(cali_out=[], bube_out=["ECL-DET-IMA"], imag_out=["ECL-SOP-IMA"])


def tree_processes(pids):
    """(root pid, psutil.Process) for the processes `pids` and all their descendants (the
    ones gone meanwhile left out)."""
    for pid in pids:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in tree:
            yield pid, proc


def tree_memory(pids) -> dict:
    """{pid: (command line, RSS in MiB)} of the processes `pids` and all their descendants."""
    found = {}
    for _, proc in tree_processes(pids):
        try:
            found[proc.pid] = (" ".join(proc.cmdline()), proc.memory_info().rss / 2**20)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def peak_memory(process: subprocess.Popen, extra_pids=()) -> dict:
    """Wait for `process`; peak RSS (MiB) per process kind of its tree and of `extra_pids`."""
    peaks: dict[str, float] = {}
    while process.poll() is None:
        for command, rss in tree_memory([process.pid, *extra_pids]).values():
            kind = kind_of(command)
            peaks[kind] = max(peaks.get(kind, 0.0), rss)
        time.sleep(0.2)
    return peaks


def kind_of(command: str) -> str:
    for marker, kind in (("SdkHarness", "sdk worker"), ("sdk_worker_main", "sdk worker"),
                         ("CoarseGrainedExecutorBackend", "spark executor"),
                         ("worker_pool_main", "worker pool"),
                         ("local_job_service", "job service"),
                         ("StandaloneSession", "flink jobmanager"),
                         ("TaskManagerRunner", "flink taskmanager"),
                         ("deploy.master", "spark master"), ("deploy.worker", "spark worker"),
                         ("job-server", "job server"), ("ecpi_beam.run", "ecpi_run (driver)")):
        if marker in command:
            return kind
    return "other"


def simulate(root: Path, home: Path, count: int, duration: float) -> str:
    for index in range(count):
        obs_id = f"{200 + index:010d}"
        directory = root / "input" / f"obs_{obs_id}"
        if not list(directory.glob("ECL-EVT-SEC*")):
            simulate_observation(directory, home, obs_id=obs_id, duration=duration,
                                 seed=1000 + index)
    return str(root / "input" / "obs_*")


def prepare_campaign(root: Path, count: int, duration: float, products: dict):
    """(environment of the runs, parameter file) of a campaign of `count` simulated
    observations under `root` (workspace with the default CALDB, input, out), made once."""
    home = root / "home"
    env = dict(os.environ, ECPI_HOME=str(home), PYTHONPATH=str(ROOT))
    os.environ["ECPI_HOME"] = str(home)
    if not (home / ".ect" / "caldb").exists():
        from ecpi_beam.caldb.init import main as caldb_init

        caldb_init(["-s"])
    glob = simulate(root, home, count, duration)
    out = root / "out"
    out.mkdir(exist_ok=True)
    return env, write_params(root / "params.ini", glob, out, **products)


def timed_run(label, beam_args, params, env, watch):
    """`ecpi_run --params PARAMS --force BEAM_ARGS` in a fresh process, `watch(process)`
    sampling it until it ends; (wall seconds, its standard output, what watch returned)."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "ecpi_beam.run", "--params", str(params),
                                "--force", *beam_args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    watched = watch(process)
    out, err = process.communicate()
    elapsed = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"{label} failed ({process.returncode}):\n{out}\n{err[-4000:]}")
    return elapsed, out, watched


def run_campaign(label, beam_args, params, env, extra_pids=()) -> dict:
    elapsed, out, peaks = timed_run(label, beam_args, params, env,
                                    lambda process: peak_memory(process, extra_pids))
    return {"engine": label, "elapsed_s": elapsed, "peaks_mib": peaks, "summary": out.strip()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--observations", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--engines", default="inprocess,multiprocess,pool")
    args = parser.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="ecpi-campaign-bench-"))
    env, params = prepare_campaign(root, args.observations, args.duration, PRODUCTS)
    results = []
    for engine in args.engines.split(","):
        if engine == "inprocess":
            results.append(run_campaign(engine, [], params, env))
        elif engine == "inprocess-onewave":  # the whole campaign as one pipeline
            results.append(run_campaign(engine, ["--campaign_batch", "0"], params, env))
        elif engine == "multiprocess":
            results.append(run_campaign(engine, ["--direct_num_workers", "2",
                                                 "--direct_running_mode", "multi_processing"],
                                        params, env))
        else:
            results.append(on_cluster(engine, params, env, root))
    base = results[0]["elapsed_s"]
    print(f"{args.observations} observations of {args.duration:.0f} s\n")
    print("| engine | wall time (s) | observations/hour | speed-up | peak RSS per process (MiB) |")
    print("|---|---|---|---|---|")
    for result in results:
        peaks = ", ".join(f"{kind} {mib:.0f}" for kind, mib in sorted(result["peaks_mib"].items()))
        print(f"| {result['engine']} | {result['elapsed_s']:.0f} | "
              f"{3600 * args.observations / result['elapsed_s']:.0f} | "
              f"{base / result['elapsed_s']:.2f} | {peaks} |")
    (root / "bench_campaign.json").write_text(json.dumps(results, indent=1))
    return 0


def on_cluster(engine: str, params, env, root: Path) -> dict:
    """`pool`, `flink` or `spark`: the cluster started with ecpi_engine, stopped after."""
    cluster = "spark" if engine == "spark" else "flink"
    os.environ[engines.STATE_ENV] = str(root / "engines")
    options = engines.start(cluster)
    try:
        pids = [int(entry["pid"]) for entry in
                engines.recorded(engines.state_dir(cluster)).values()]
        if engine != "pool":
            return run_campaign(engine, options, params, env, pids)
        service = subprocess.Popen([sys.executable, "-m",
                                    "apache_beam.runners.portability.local_job_service_main",
                                    "--port", "18777"], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)
            environment = options[options.index("--environment_type"):]
            return run_campaign("job service + worker pool (EXTERNAL)",
                                ["--runner", "PortableRunner", "--job_endpoint",
                                 "localhost:18777", *environment], params, env,
                                [service.pid, *pids])
        finally:
            service.terminate()
            service.wait()
    finally:
        engines.stop(cluster)


if __name__ == "__main__":
    sys.exit(main())
