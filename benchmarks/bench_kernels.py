"""Stage ratios in one process, side by side: the project's event path and imaging against the
minimal bare-numpy chain (bare_numpy_minimal.py), and the start-up cost.

    python benchmarks/bench_kernels.py [--events 1e7] [--repeat 5] [--cache DIR]
        [--import-checkout OTHER_CHECKOUT] [--json out.json]

event path  events read per CPU second (time.process_time, i.e. per core) of
            - minimal: bare_numpy_minimal.bin_events over the memmapped EVENTS rows;
            - project: what the pipeline's DoFns do to each chunk, without Beam:
              transforms.read.read_event_chunk, CalibrateChunk.process (calibration with the
              good time) and BinDetectorImages.process (occultation classes, one bincount for
              every (band, occ) key), with the five default bands and PEO;
            the two alternate, --repeat times; medians and their ratio.
imaging     seconds per call (minimum of many calls, each side alternating with the other) of
            a single FFT cross-correlation of the same size (rfft2 of the 80 x 80 image padded
            to 200 x 200, product with a prepared kernel FFT, irfft2) against the project's
            balanced_intensity (one balanced correlation) and balanced_sky_image (intensity and
            variance: two of them), with the plan and balance terms prepared beforehand.
start-up    CPU seconds of `python -c "import ecpi_beam.run"` in fresh processes (median), and
            of the same import from --import-checkout (another checkout, e.g. the main branch)
            alternating with it, for a before/after figure.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import bare_numpy_minimal as minimal  # noqa: E402
from bench_chain import DEFAULT_CACHE, child_env, simulate_input, write_json  # noqa: E402


def _cpu_seconds(function) -> float:
    started = time.process_time()
    function()
    return time.process_time() - started


def event_path(obs_dir: str, repeat: int, chunk: int = 1_000_000) -> dict:
    """Events read per CPU second, minimal chain and project DoFns, alternating."""
    from ecpi_beam import instrument
    from ecpi_beam.caldb import Caldb, default_caldb_dir
    from ecpi_beam.io import events as event_io
    from ecpi_beam.kernels.gti import good_time
    from ecpi_beam.params import BubeParams
    from ecpi_beam.transforms import read
    from ecpi_beam.transforms.bube import BinDetectorImages, observation_timeline
    from ecpi_beam.transforms.cali import CalibrateChunk

    caldb_dir = default_caldb_dir()
    observation = read.inspect_observation(obs_dir)
    bube = BubeParams(energy_channels=instrument.DEFAULT_BANDS, ear_occ_bub=("PEO",))
    timelines = {observation.obs_id: observation_timeline(observation, bube)}
    good = {observation.obs_id: good_time(observation)["ALL"]}
    calibrate, binner = CalibrateChunk(caldb_dir), BinDetectorImages(bube.energy_channels,
                                                                    bube.ear_occ_bub)
    calibrate.setup()
    binner.setup()
    layout = event_io.table_layout(observation.evt_url, "EVENTS")
    descriptors = read.chunk_descriptors(observation, chunk)

    def project():
        for descriptor in descriptors:
            events, _ = read.read_event_chunk(descriptor, layout)
            for _, calibrated in calibrate.process((observation.obs_id, events), good):
                for _ in binner.process((observation.obs_id, calibrated), timelines):
                    pass

    rows, gti = minimal.open_events(obs_dir)
    gain, offset, usable, _, _ = minimal.pixel_tables(Caldb.open(caldb_dir).location)
    band_of_pi = minimal.band_lookup(instrument.DEFAULT_BANDS)

    def bare():
        minimal.bin_events(rows, gti, gain, offset, usable, band_of_pi, chunk)

    bare()  # page cache and first-call costs, for both
    project()
    runs = {"minimal": [], "project": []}
    for _ in range(repeat):
        runs["minimal"].append(_cpu_seconds(bare))
        runs["project"].append(_cpu_seconds(project))
    n = observation.n_events
    rate = {name: n / statistics.median(values) for name, values in runs.items()}
    return {"events": n, "cpu_s": runs, "events_per_cpu_s": rate,
            "project_over_minimal_rate": rate["project"] / rate["minimal"]}


def imaging(repeat: int) -> dict:
    """Seconds per call: one FFT correlation, the balanced intensity, the balanced sky image."""
    from scipy import fft

    from ecpi_beam import instrument
    from ecpi_beam.caldb import Caldb, default_caldb_dir
    from ecpi_beam.kernels import imaging as kernels

    caldb = Caldb.open(default_caldb_dir())
    plan = kernels.make_correlation_plan(instrument.resample_mask(caldb.mask_pattern()))
    pixcal = caldb.pixel_calibration()
    weights = np.where(pixcal.status == 0, pixcal.effic, 0.0)
    counts = np.random.default_rng(0).poisson(50.0, (80, 80)).astype(float)
    terms = kernels.balance_terms(plan, weights)
    size = (kernels.FFT_SIZE, kernels.FFT_SIZE)
    kernel_fft = fft.rfft2(plan.resampled_mask, s=size)

    calls = {
        "single FFT correlation": lambda: fft.irfft2(
            np.conj(fft.rfft2(counts, s=size)) * kernel_fft, s=size)[:199, :199],
        "balanced_intensity": lambda: kernels.balanced_intensity(plan, counts, weights, terms),
        "balanced_sky_image": lambda: kernels.balanced_sky_image(
            plan, counts - counts.mean(), counts, weights, terms=terms),
    }
    best = {name: float("inf") for name in calls}
    for _ in range(repeat * 20):  # alternate, keep the fastest of each: the least disturbed
        for name, call in calls.items():
            best[name] = min(best[name], timeit.timeit(call, number=5) / 5)
    single = best["single FFT correlation"]
    return {"seconds_per_call": best,
            "over_single": {name: seconds / single for name, seconds in best.items()}}


def import_time(repeat: int, cache: str, other_checkout: str | None) -> dict:
    """Median CPU seconds (user + sys, less sensitive to a loaded machine than the wall time)
    of a fresh process doing `import ecpi_beam.run`, per checkout, alternating."""
    import resource

    env = child_env(cache, cold_imports=False)
    checkouts = {"this checkout": ROOT}
    if other_checkout:
        checkouts["other checkout"] = os.path.abspath(other_checkout)
    runs = {name: [] for name in checkouts}
    for attempt in range(repeat + 1):
        for name, path in checkouts.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-c", "import ecpi_beam.run"], cwd=path, check=True,
                           env={**env, "PYTHONPATH": path})
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if attempt:  # the first round fills the bytecode cache
                runs[name].append(after.ru_utime - before.ru_utime
                                  + after.ru_stime - before.ru_stime)
    return {"checkouts": checkouts, "cpu_s": runs,
            "median": {name: statistics.median(values) for name, values in runs.items()}}


def report(results: dict) -> str:
    lines = []
    if "event_path" in results:
        path = results["event_path"]
        rates = path["events_per_cpu_s"]
        lines += [f"event path ({path['events']:.3g} events, per CPU second): minimal "
                  f"{rates['minimal']:.3g} events/s, project {rates['project']:.3g} events/s, "
                  f"project / minimal = {path['project_over_minimal_rate']:.2f}"]
    if "imaging" in results:
        over = results["imaging"]["over_single"]
        per_call = results["imaging"]["seconds_per_call"]
        lines += [f"imaging: {name} {per_call[name] * 1e3:.3f} ms = {over[name]:.2f} x single"
                  for name in per_call]
    if "import" in results:
        for name, seconds in results["import"]["median"].items():
            lines.append(f"import ecpi_beam.run ({name}): {seconds:.2f} CPU s (median)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=float, default=1e7)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    parser.add_argument("--import-checkout", help="another checkout to time the import of")
    parser.add_argument("--only", default="event_path,imaging,import",
                        help="what to measure: event_path,imaging,import")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    wanted = args.only.split(",")
    results = {"load_1min": os.getloadavg()[0], "cores": os.cpu_count()}
    if "event_path" in wanted:
        obs_dir = simulate_input(int(args.events), args.cache)
        results["event_path"] = event_path(obs_dir, args.repeat)
    if "imaging" in wanted:
        results["imaging"] = imaging(args.repeat)
    if "import" in wanted:
        results["import"] = import_time(args.repeat, args.cache, args.import_checkout)
    print(report(results))
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
