"""Whole-chain benchmark: `ecpi_run` (DirectRunner) against a bare numpy script, same input.

    python benchmarks/bench_chain.py --events 1e7 [--events 3e7] [--products all,images]
        [--modes minimal,beam-floor,beam-empty,numpy,beam,beam-mp] [--bands demo|five] [--chunk-size 1000000]
        [--repeat 3] [--cache DIR]
    python benchmarks/bench_chain.py --events 1e7 --profile beam   # cProfile of one ecpi_run
    python benchmarks/bench_chain.py --events 1e7 --phases         # imports / graph / run split
    python benchmarks/bench_chain.py --report runs.json            # the table from --json files
    python benchmarks/bench_chain.py --campaign 16 --duration 600 --products det-sky \
        --bands five --modes minimal,beam --repeat 5               # a campaign, one ecpi_run

The default scenario (ecpi_beam.simu.default_scenario, about 4000 counts/s) is simulated once
per size into the cache folder (default benchmarks/output/cache, git-ignored) and reused. For
each product set a parameter file is written:
  all     every product: ECL-GTI-CAL, ECL-EVT-CAL, ECL-DET-IMA, ECL-DET-UBC, ECL-GTI-UBC,
          ECL-SKY-IMA, ECL-SOP-IMA;
  images  the sky images and source lists only (ECL-SKY-IMA, ECL-SOP-IMA);
  det-sky ECL-DET-IMA, ECL-SKY-IMA, ECL-SOP-IMA.
Bands: the demo's six (--bands demo) or the five default ones (--bands five); PEO, background
'shape'. Modes alternate within each repetition, so that a change of load hits all of them;
the ratio column is against the first mode given.

--campaign N: the input is instead a campaign of N observations of --duration seconds
(campaign_scenario: the demo's pointing and orbit, one source of 0.15 to 0.45 Crab at a
different place in each, the background scaled to about 880 counts/s, so that 16 x 600 s
hold about 8.4e6 events), simulated once into cache/campaign-<N>x<duration>/obs_*; one
`ecpi_run` processes them all (working_in a glob), and the minimal chain loops over the
same triplets in one process.

Each measurement is one fresh process, timed from outside (whole-process wall time, imports
included):
  minimal  python benchmarks/bare_numpy_minimal.py OBS CALDB  (no project code at all)
  beam-floor  the same minimal chain as one Beam Map (benchmarks/beam_floor.py): Beam's cost
  beam-empty  a Beam pipeline of one Create and one Map doing nothing
  numpy    python benchmarks/bare_numpy_chain.py params.ini  (same kernels, no Beam)
  beam     ecpi_run params.ini                                (DirectRunner defaults)
  beam-mp  ecpi_run params.ini --direct_num_workers 2 --direct_running_mode multi_processing
  beam-base  ecpi_run params.ini importing the package of --baseline-checkout (before/after)
Memory: `peak RSS` is the largest single process (ru_maxrss from wait4, which covers the
process and every descendant it waited for; it cannot be below this benchmark's own footprint,
inherited through fork, recorded as parent_rss_mb); `peak tree` is the largest sum of RSS over
the process and all its descendants, sampled every 50 ms (what matters for multi_processing).
Prints one markdown table, with medians over --repeat runs, and writes the raw runs as JSON
(--json). Measured processes get their own bytecode cache and a warm-up run (see child_env;
--cold-imports measures the environment as it is).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # run as a script from a checkout: the package is the folder above

DEFAULT_CACHE = os.path.join(HERE, "output", "cache")
EVENTS_PER_SECOND_ESTIMATE = 4000.0  # the default scenario's count rate, to size the duration
from ecpi_beam.demo import DEMO_BANDS  # noqa: E402
from ecpi_beam.instrument import DEFAULT_BANDS  # noqa: E402
from ecpi_beam.params import params_text  # noqa: E402
BAND_SETS = {"demo": DEMO_BANDS, "five": DEFAULT_BANDS}  # demo: the five and 13-1260
PRODUCT_SETS = {
    "all": {"cali": ["ECL-GTI-CAL", "ECL-EVT-CAL"],
            "bube": ["ECL-DET-IMA", "ECL-DET-UBC", "ECL-GTI-UBC"],
            "imag": ["ECL-SKY-IMA", "ECL-SOP-IMA"]},
    "images": {"cali": [], "bube": [], "imag": ["ECL-SKY-IMA", "ECL-SOP-IMA"]},
    "det-sky": {"cali": [], "bube": ["ECL-DET-IMA"], "imag": ["ECL-SKY-IMA", "ECL-SOP-IMA"]},
}
WARM_UP_EVENTS = 100_000
MODES = ("minimal", "beam-floor", "beam-empty", "numpy", "beam", "beam-base", "beam-mp")
BASELINE = {}  # "checkout": the folder whose ecpi_beam the beam-base mode imports
MP_ARGS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


# ==============================================================================================
# Input and parameter files
# ==============================================================================================
def simulate_input(n_events: int, cache: str) -> str:
    """An observation directory (under cache/input-<n>/) with about n_events events."""
    from ecpi_beam.caldb import Caldb, default_caldb_dir
    from ecpi_beam.simu import default_scenario, scenario_with, simulate

    top = os.path.join(cache, f"input-{n_events}")
    directory = os.path.join(top, "obs")
    if os.path.exists(os.path.join(top, "done")):
        return directory
    duration = max(10.0, n_events / EVENTS_PER_SECOND_ESTIMATE)
    scenario = scenario_with(default_scenario(), duration=duration, obs_id="0000001000")
    started = time.perf_counter()
    print(f"simulating {duration:.0f} s (~{n_events:.3g} events) into {directory} ...",
          file=sys.stderr, flush=True)
    simulate(scenario, directory, Caldb.open(default_caldb_dir()))
    print(f"simulated in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    with open(os.path.join(top, "done"), "w", encoding="utf-8") as stream:
        stream.write(f"{duration}\n")
    return directory


# a campaign of small observations (--campaign): the background scaled to about 880 counts/s
CAMPAIGN_BACKGROUND = {"cxb_scale": 0.1, "internal_rate": 0.05}
CAMPAIGN_FIRST_OBS_ID = 3000


def campaign_scenario(index: int, duration: float):
    """Observation `index` of a benchmark campaign: the demo's pointing and orbit, one source
    of 0.15 to 0.45 Crab within 8 deg of the axis, a lower background (CAMPAIGN_BACKGROUND)."""
    import numpy as np

    from ecpi_beam import instrument
    from ecpi_beam.simu import PointSource, default_scenario, scenario_with

    base = default_scenario()
    rng = np.random.default_rng(CAMPAIGN_FIRST_OBS_ID + index)
    pointing = base.pointings[0]
    quaternion = instrument.quaternion_from_pointing(pointing.ra, pointing.dec, pointing.roll)
    off_y, off_z = rng.uniform(-8.0, 8.0, 2)
    los = np.array([1.0, np.tan(np.radians(off_y)), np.tan(np.radians(off_z))])
    ra, dec = instrument.los_to_radec(los / np.linalg.norm(los), quaternion)
    source = PointSource(name=f"S{index:02d}", ra=round(float(ra), 4), dec=round(float(dec), 4),
                         norm=round(10.0 * rng.uniform(0.15, 0.45), 4), index=2.1)
    obs_id = f"{CAMPAIGN_FIRST_OBS_ID + index:010d}"
    return scenario_with(base, name=f"campaign{index:02d}", obs_id=obs_id,
                         seed=CAMPAIGN_FIRST_OBS_ID + index, duration=duration,
                         sources=(source,), background=dict(CAMPAIGN_BACKGROUND))


def campaign_name(n_observations: int, duration: float) -> str:
    return f"campaign-{n_observations}x{duration:g}"


def simulate_campaign(n_observations: int, duration: float, cache: str) -> str:
    """The folder (under cache/campaign-<n>x<duration>/) of n simulated observations."""
    from ecpi_beam.caldb import Caldb, default_caldb_dir
    from ecpi_beam.simu import simulate

    top = os.path.join(cache, campaign_name(n_observations, duration))
    if os.path.exists(os.path.join(top, "done")):
        return top
    caldb = Caldb.open(default_caldb_dir())
    started = time.perf_counter()
    total = 0
    for index in range(n_observations):
        scenario = campaign_scenario(index, duration)
        print(f"simulating {scenario.obs_id} ({duration:.0f} s) into {top} ...",
              file=sys.stderr, flush=True)
        total += simulate(scenario, os.path.join(top, f"obs_{scenario.obs_id}"), caldb).n_events
    print(f"simulated {total} events in {time.perf_counter() - started:.0f} s", file=sys.stderr,
          flush=True)
    with open(os.path.join(top, "done"), "w", encoding="utf-8") as stream:
        stream.write(f"{n_observations} {duration} {total}\n")
    return top


def write_params(cache: str, n_events, products: str, chunk_size: int,
                 bands: str = "demo") -> str:
    """cache/runs/<n>-<products>-<chunk>[-<bands>]/params.ini, its working_out next to it.
    `n_events` is a number of events (one observation, input-<n>/obs) or a campaign's name
    (campaign_name: working_in is the glob of its observations)."""
    from ecpi_beam.caldb import default_caldb_dir

    if isinstance(n_events, str):  # a campaign
        obs_dir = os.path.join(cache, n_events, "obs_*")
    else:
        obs_dir = os.path.join(cache, f"input-{n_events}", "obs")
    suffix = "" if bands == "demo" else f"-{bands}"
    run_dir = os.path.join(cache, "runs", f"{n_events}-{products}-{chunk_size}{suffix}")
    working_out = os.path.join(run_dir, "output")
    os.makedirs(working_out, exist_ok=True)
    chosen = PRODUCT_SETS[products]
    path = os.path.join(run_dir, "params.ini")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(params_text(
            obs_dir, working_out, default_caldb_dir(), energy_channels=BAND_SETS[bands],
            cali_out=chosen["cali"], bube_out=chosen["bube"], imag_out=chosen["imag"],
            extra={"cali": {"chunk_size": chunk_size}}))
    return path


def ecpi_run_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "ecpi_run")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "ecpi_beam.run"]


def child_env(cache: str, cold_imports: bool) -> dict:
    """The environment of measured processes.

    By default the bytecode of every imported module is cached under cache/pycache
    (PYTHONPYCACHEPREFIX), as a normal installation has it: a virtual environment whose .pyc
    are stale (sources copied after installation) or PYTHONDONTWRITEBYTECODE=1 would make
    every run recompile Beam, astropy and scipy (about 6 s per process on 2 cores).
    --cold-imports keeps the caller's environment as it is.
    """
    env = dict(os.environ)
    if not cold_imports:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = os.path.join(cache, "pycache")
    return env


def warm_up(cache: str, modes, env) -> None:
    """One unmeasured run of each mode on a small input, to fill the bytecode cache."""
    simulate_input(WARM_UP_EVENTS, cache)
    params = write_params(cache, WARM_UP_EVENTS, "all", 1_000_000)
    for mode in modes:
        done = subprocess.run(command_for(mode, params), env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"warning: warm-up run of {mode} failed (exit {done.returncode}):\n"
                  f"{done.stderr[-2000:]}", file=sys.stderr)


def minimal_command(params: str) -> list[str]:
    """bare_numpy_minimal.py on the observations (all of a campaign's, in turn), CALDB, chunk
    size and bands of `params`."""
    from ecpi_beam.io import fs
    from ecpi_beam.params import load_params
    from ecpi_beam.workspace import resolve_caldb_dir

    loaded = load_params(params)
    obs_dirs = fs.find_observation_dirs(loaded.general.working_in)
    bands = ",".join(f"{lo}-{hi}" for lo, hi in loaded.bube.energy_channels)
    return [sys.executable, os.path.join(HERE, "bare_numpy_minimal.py"), *obs_dirs,
            resolve_caldb_dir(loaded.general.caldb_dir), "--chunk-size",
            str(loaded.cali.chunk_size), "--bands", bands]


def command_for(mode: str, params: str) -> list[str]:
    if mode == "minimal":
        return minimal_command(params)
    if mode == "beam-floor":  # the minimal chain as one Beam Map: Beam's own fixed cost
        return [sys.executable, os.path.join(HERE, "beam_floor.py"), *minimal_command(params)[2:]]
    if mode == "beam-empty":  # a Create and a Map doing nothing
        return [sys.executable, os.path.join(HERE, "beam_floor.py"), "--empty"]
    if mode == "numpy":
        return [sys.executable, os.path.join(HERE, "bare_numpy_chain.py"), params]
    if mode == "beam":
        return [*ecpi_run_command(), params]
    if mode == "beam-mp":
        return [*ecpi_run_command(), params, *MP_ARGS]
    if mode == "beam-base":  # the same ecpi_run, importing another checkout's package
        if "checkout" not in BASELINE:
            raise SystemExit("mode beam-base needs --baseline-checkout")
        # `python -P -m`: the other checkout's own entry point, whatever its console script
        # is; -P keeps the working directory (maybe this checkout) off the front of sys.path
        return ["env", f"PYTHONPATH={BASELINE['checkout']}", sys.executable, "-P", "-m",
                "ecpi_beam.run", params]
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


# ==============================================================================================
# Measuring one process
# ==============================================================================================
def _tree_rss_bytes(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(command: list[str], env=None) -> dict:
    """Wall time, peak single-process RSS (wait4) and sampled peak tree RSS of one command."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak_tree = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak_tree[0] = max(peak_tree[0], _tree_rss_bytes(process.pid))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = {}

    def drain(stream, key):
        output[key] = stream.read().decode(errors="replace")

    readers = [threading.Thread(target=drain, args=(process.stdout, "stdout")),
               threading.Thread(target=drain, args=(process.stderr, "stderr"))]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    for reader in readers:
        reader.join()
    # ru_maxrss starts from this process's own footprint (inherited through fork): noted, so
    # that a child smaller than its parent is read from the sampled peak tree instead
    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"command": command, "returncode": process.returncode, "seconds": seconds,
            "peak_rss_mb": usage.ru_maxrss / 1024.0, "peak_tree_mb": peak_tree[0] / 2**20,
            "parent_rss_mb": parent_mb,
            "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "load": os.getloadavg()[0], "stdout": output.get("stdout", ""),
            "stderr": output.get("stderr", "")}


def _clean_outputs(params: str) -> None:
    """Remove the products of a previous run (products are re-written each time anyway)."""
    folder = os.path.join(os.path.dirname(params), "output")
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.remove(path)


# ==============================================================================================
# Phases of one ecpi_run (in a child process)
# ==============================================================================================
def phases_child(params_path: str, beam_args: list[str]) -> None:
    """Seconds spent importing, building the graph and running it, as run.main does them."""
    started = time.perf_counter()
    import apache_beam as beam  # noqa: F401  (what `import ecpi_beam.run` costs, mostly)
    beam_imported = time.perf_counter()
    from apache_beam.options.pipeline_options import PipelineOptions

    from ecpi_beam import run
    from ecpi_beam.io import fs
    from ecpi_beam.params import load_params
    from ecpi_beam.pipelines.direct import runner_for
    from ecpi_beam.pipelines.observation import build_observation_pipeline
    from ecpi_beam.workspace import resolve_caldb_dir
    imported = time.perf_counter()
    params = load_params(params_path)
    caldb_dir = resolve_caldb_dir(params.general.caldb_dir)
    observation_dirs = fs.find_observation_dirs(params.general.working_in)
    _, beam_args = run.parse_args([params_path, *beam_args])
    options = PipelineOptions(beam_args)
    pipeline = beam.Pipeline(runner=runner_for(options), options=options)  # as run.run
    build_observation_pipeline(pipeline, params, caldb_dir, observation_dirs)
    built = time.perf_counter()
    result = pipeline.run()
    result.wait_until_finish()
    done = time.perf_counter()
    print(json.dumps({"import apache_beam": beam_imported - started,
                      "import ecpi_beam (run, pipeline, kernels)": imported - beam_imported,
                      "build the graph": built - imported,
                      "run (translate, fuse, execute, write)": done - built,
                      "total in process": done - started}))


# ==============================================================================================
# Profile
# ==============================================================================================
PROFILE_CHILD = """
import atexit, cProfile, runpy, sys, time
stats, target = sys.argv[1], sys.argv[2:]
profiler = cProfile.Profile(time.process_time)  # CPU seconds: less disturbed by the load


def dump():
    profiler.disable()
    profiler.dump_stats(stats)


atexit.register(dump)  # ecpi_run ends without the interpreter's teardown, after atexit
sys.argv = target
profiler.enable()
try:
    if target[0] == "-m":
        sys.argv = target[1:]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(target[0], run_name="__main__")
except SystemExit:
    pass
"""
# Where the CPU goes in one ecpi_run: (label, functions whose cumulative time is that stage,
# as "module:Class.method" or a bare function name). The stages do not overlap; the Beam
# runner's row is what DirectRunner.run_pipeline spends outside them.
PROFILE_STAGES = (
    ("imports (all modules, whenever imported)", ("_find_and_load",)),
    ("graph construction", ("ecpi_beam.pipelines.observation:build_observation_pipeline",)),
    ("DPCO: triplet inspection", ("ecpi_beam.transforms.read:InspectObservation.process",)),
    ("event path: read chunks + DPCO chunk checks",
     ("ecpi_beam.transforms.read:ReadEventChunk.process",)),
    ("event path: calibrate (good time incl.)",
     ("ecpi_beam.transforms.cali:CalibrateChunk.process",)),
    ("event path: occultation classes + binning",
     ("ecpi_beam.transforms.bube:BinDetectorImages.process",)),
    ("imaging timeline (attitude, orbit, occultation)",
     ("ecpi_beam.transforms.bube:MakeTimeline.process",)),
    ("BUBE background (setup + fits)", ("ecpi_beam.transforms.bube:CorrectBackground.setup",
                                        "ecpi_beam.transforms.bube:CorrectBackground.process")),
    ("IMAG setup (sky analyser, plan)", ("ecpi_beam.transforms.imag:MakeSkyImages.setup",)),
    ("IMAG: sky images, cleaning, detection, fits",
     ("ecpi_beam.transforms.imag:MakeSkyImages.process",)),
    ("product writers", ("ecpi_beam.transforms.write:WriteProductFile.process",)),
)


def _code_key(spec: str):
    """The pstats key (file, first line, name) of 'module:Class.method', or None."""
    import importlib
    import inspect

    module, _, path = spec.partition(":")
    try:
        target = importlib.import_module(module)
        for part in path.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return None
    code = inspect.unwrap(target).__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def profile_summary(stats_path: str) -> list[tuple[str, float]]:
    """(stage, CPU seconds) of a profile by PROFILE_STAGES, then the Beam runner's own time and
    the total."""
    import pstats

    stats = pstats.Stats(stats_path).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)

    def cumulative(spec):
        if ":" in spec:
            key = _code_key(spec)
            return stats[key][3] if key in stats else 0.0
        return max((value[3] for key, value in stats.items() if key[2] == spec), default=0.0)

    rows = [(label, sum(cumulative(spec) for spec in specs)) for label, specs in PROFILE_STAGES]
    run = max((value[3] for key, value in stats.items()
               if key[2] == "run_pipeline" and key[0].endswith("direct_runner.py")), default=0.0)
    inside_run = sum(seconds for label, seconds in rows[2:])
    rows.append(("Beam runner itself (translation, bundles, coders, threads) and the rest",
                 max(run - inside_run, 0.0)))
    rows.append(("total CPU of the profiled process",
                 max(value[3] for value in stats.values())))
    return rows


def profile(mode: str, params: str, out_dir: str, env=None, top: int = 45) -> str:
    """cProfile (CPU time) of one run of `mode` (the main process only); prints the top and, for
    ecpi_run, the CPU per stage (PROFILE_STAGES)."""
    os.makedirs(out_dir, exist_ok=True)
    stats = os.path.join(out_dir, f"{mode}-{os.path.basename(os.path.dirname(params))}.prof")
    if mode == "numpy":
        target = [os.path.join(HERE, "bare_numpy_chain.py"), params]
    else:
        # --force: the timed runs left their products (resume would skip them all)
        target = ["-m", "ecpi_beam.run", params, "--force",
                  *(MP_ARGS if mode == "beam-mp" else [])]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", PROFILE_CHILD, stats, *target], check=True, env=env)
    print(f"profiled run: {time.perf_counter() - started:.1f} s -> {stats}")
    import pstats

    for sort in ("cumulative", "tottime"):
        print(f"\n=== top {top} by {sort} ===")
        pstats.Stats(stats).sort_stats(sort).print_stats(top)
    if mode != "numpy":
        rows = profile_summary(stats)
        total = rows[-1][1]
        print("\n| stage | CPU s (profiled) | share |\n|---|---|---|")
        for label, seconds in rows:
            print(f"| {label} | {seconds:.2f} | {100 * seconds / total:.0f} % |")
    return stats


# ==============================================================================================
def _median(runs, key):
    return statistics.median(run[key] for run in runs)


def _joined(runs, key):
    return ", ".join(f"{run[key]:.1f}" for run in runs)


def _reported(runs, what, default=None):
    """A number from the summary line of ecpi_run or of the bare script ('events read N')."""
    for run in runs:
        match = re.search(what + r" (\d+)", run["stdout"])
        if match:
            return int(match.group(1))
    return default


TABLE_HEADER = (
    "| events read | products | chunk | mode | wall s (median) | wall s (runs) | events/s | "
    "x first mode | CPU s (user+sys) | CPU x first mode | peak RSS MB | peak tree MB | sources | "
    "load (1 min) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _cpu(runs):
    return statistics.median(run["user_s"] + run["sys_s"] for run in runs)


def _rate(events, seconds) -> str:
    return "-" if isinstance(events, str) else f"{events / seconds:.3g}"


def _size(events) -> str:
    """An events count, or a campaign's name."""
    return events if isinstance(events, str) else f"{events:.3g}"


def table_row(runs, reference_runs=None) -> str:
    """One markdown row for the runs of one (events, products, chunk, mode); ratios against
    the medians of reference_runs (wall and CPU)."""
    first = runs[0]
    reference_seconds = _median(reference_runs, "seconds") if reference_runs else None
    seconds = _median(runs, "seconds")
    ratio = f"{seconds / reference_seconds:.2f}" if reference_seconds else "-"
    events = _reported(runs, "events read", first["events"])
    sources = _reported(runs, "sources", "?")
    cpu = _cpu(runs)
    cpu_ratio = f"{cpu / _cpu(reference_runs):.2f}" if reference_runs else "-"
    return (f"| {_size(events)} | {first['products']} | {first['chunk_size']:.0e} | {first['mode']} | "
            f"{seconds:.1f} | {_joined(runs, 'seconds')} | {_rate(events, seconds)} | {ratio} | "
            f"{cpu:.1f} | {cpu_ratio} | {_median(runs, 'peak_rss_mb'):.0f} | "
            f"{_median(runs, 'peak_tree_mb'):.0f} | "
            f"{sources} | {_joined(runs, 'load')} |")


def report(json_files) -> None:
    """The table again, from the --json files of earlier runs."""
    groups = {}
    for path in json_files:
        with open(path, encoding="utf-8") as stream:
            for run in json.load(stream):
                key = (run["events"], run["products"], run["chunk_size"])
                groups.setdefault(key, {}).setdefault(run["mode"], []).append(run)
    print(TABLE_HEADER)
    for key in sorted(groups, key=str):
        by_mode = groups[key]
        first = next(mode for mode in MODES if mode in by_mode)
        for mode in MODES:
            if mode in by_mode:
                print(table_row(by_mode[mode], by_mode[first]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", action="append", type=float,
                        help="events to simulate, repeatable (default 1e7)")
    parser.add_argument("--campaign", type=int, default=0, metavar="N",
                        help="also a campaign of N observations (see campaign_scenario)")
    parser.add_argument("--duration", type=float, default=600.0,
                        help="seconds per observation of --campaign (600)")
    parser.add_argument("--products", default="all,images", help="product sets: all,images")
    parser.add_argument("--modes", default="numpy,beam,beam-mp",
                        help=f"some of {','.join(MODES)} (the first is the reference)")
    parser.add_argument("--baseline-checkout", help="for mode beam-base: a checkout (e.g. of "
                        "the main branch) whose package ecpi_run imports instead of this one")
    parser.add_argument("--chunk-size", default="1000000",
                        help="[cali] chunk_size values, comma separated (1000000)")
    parser.add_argument("--bands", default="demo", choices=sorted(BAND_SETS),
                        help="demo: the demo's six bands; five: the five default bands")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="input and output folder "
                        "(default benchmarks/output/cache)")
    parser.add_argument("--json", help="write every run (commands, times, memory) here")
    parser.add_argument("--profile", choices=MODES, help="cProfile one run of this mode instead")
    parser.add_argument("--simulate-only", action="store_true")
    parser.add_argument("--phases", action="store_true",
                        help="time the phases of ecpi_run (imports, graph, run) instead")
    parser.add_argument("--phases-child", help=argparse.SUPPRESS)
    parser.add_argument("--report", nargs="+", metavar="JSON",
                        help="print the table from --json files of earlier runs, run nothing")
    parser.add_argument("--cold-imports", action="store_true",
                        help="no bytecode cache of our own, no warm-up run (see child_env)")
    args, beam_args = parser.parse_known_args(argv)
    if args.baseline_checkout:
        BASELINE["checkout"] = os.path.abspath(args.baseline_checkout)
    if args.report:
        report(args.report)
        return 0
    if args.phases_child:
        phases_child(args.phases_child, beam_args)
        return 0

    sizes = [int(n) for n in (args.events or ([] if args.campaign else [1e7]))]
    products = args.products.split(",")
    modes = args.modes.split(",")
    chunk_sizes = [int(float(c)) for c in args.chunk_size.split(",")]
    for n_events in sizes:
        simulate_input(n_events, args.cache)
    if args.campaign:  # a campaign's name stands for its size (write_params)
        simulate_campaign(args.campaign, args.duration, args.cache)
        sizes.append(campaign_name(args.campaign, args.duration))
    if args.simulate_only:
        return 0
    if args.phases:
        env = child_env(args.cache, args.cold_imports)
        if not args.cold_imports:
            warm_up(args.cache, ["beam"], env)
        print("| events | products | chunk | phase | seconds (median) | runs | load |")
        print("|---|---|---|---|---|---|---|")
        for n_events in sizes:
            for product_set in products:
                for chunk_size in chunk_sizes:
                    params = write_params(args.cache, n_events, product_set, chunk_size,
                                          args.bands)
                    runs = []
                    for _ in range(args.repeat):
                        _clean_outputs(params)
                        out = subprocess.run(
                            [sys.executable, os.path.abspath(__file__), "--phases-child", params,
                             *beam_args], env=env, check=True, capture_output=True, text=True)
                        runs.append((json.loads(out.stdout.strip().splitlines()[-1]),
                                     os.getloadavg()[0]))
                    for phase in runs[0][0]:
                        values = [r[phase] for r, _ in runs]
                        print(f"| {_size(n_events)} | {product_set} | {chunk_size:.0e} | {phase} | "
                              f"{statistics.median(values):.2f} | "
                              f"{', '.join(f'{v:.2f}' for v in values)} | "
                              f"{', '.join(f'{load:.1f}' for _, load in runs)} |", flush=True)
        return 0
    if args.profile:
        env = child_env(args.cache, args.cold_imports)
        if not args.cold_imports:
            warm_up(args.cache, [args.profile], env)
        for n_events in sizes:
            for product_set in products:
                for chunk_size in chunk_sizes:
                    params = write_params(args.cache, n_events, product_set, chunk_size,
                                          args.bands)
                    profile(args.profile, params, os.path.join(args.cache, "profiles"), env)
        return 0

    env = child_env(args.cache, args.cold_imports)
    if not args.cold_imports:
        warm_up(args.cache, modes, env)
    print(f"machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(TABLE_HEADER)
    records = []
    for n_events in sizes:
        for product_set in products:
            for chunk_size in chunk_sizes:
                params = write_params(args.cache, n_events, product_set, chunk_size, args.bands)
                runs_of = {mode: [] for mode in modes}
                for _ in range(args.repeat):  # modes alternate, so that load changes hit all
                    for mode in modes:
                        _clean_outputs(params)
                        run = measure(command_for(mode, params), env)
                        run.update(events=n_events, products=product_set, bands=args.bands,
                                   chunk_size=chunk_size, mode=mode)
                        runs_of[mode].append(run)
                        records.append(run)
                        if run["returncode"] != 0:
                            print(run["stderr"][-3000:], file=sys.stderr)
                            raise SystemExit(f"{' '.join(run['command'])}: exit "
                                             f"{run['returncode']}")
                for mode in modes:
                    print(table_row(runs_of[mode], runs_of[modes[0]]), flush=True)
    write_json(args.json, records)
    return 0


def write_json(path, data) -> None:
    """The raw results, when a --json path was given."""
    if path:
        with open(path, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1)


if __name__ == "__main__":
    sys.exit(main())
