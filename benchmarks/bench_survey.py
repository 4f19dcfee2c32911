"""A survey campaign as a user runs it: the first run, the rerun, and the run after observations
were added to working_in (docs/mosa.md, "How a campaign is mosaicked").

    python benchmarks/bench_survey.py [--fields 2] [--observations 6] [--added 1]
        [--duration 150] [--cache DIR]

The campaign is mosaic_accuracy.py's (seed 7): --fields fields of six steady sources,
--observations pointings per field, every observation seeing the whole sky. working_in lists
the observations but the last --added of each field; `ecpi_run` (default options: the
DirectRunner's waves of 4) with the five default bands, ECL-SOP-IMA and the three MOSA
products runs three times on the same working_out: first, again (everything up to date), and
with the held-back observations added. Each run is a fresh process timed from outside (wall,
CPU, peak RSS, load), as bench_chain.py measures.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_chain import DEFAULT_CACHE, child_env, measure  # noqa: E402
from mosaic_accuracy import simulate_campaign  # noqa: E402

SEED = 7


def main(argv=None) -> int:
    from ecpi_beam.caldb import default_caldb_dir
    from ecpi_beam.params import params_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument("--observations", type=int, default=6)
    parser.add_argument("--added", type=int, default=1)
    parser.add_argument("--duration", type=float, default=150.0)
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    root = Path(args.cache) / "survey" / f"{args.fields}x{args.observations}-{args.duration:g}s"
    simulate_campaign(root, SEED, args.fields, args.observations, args.duration)
    directories = sorted(root.glob("obs_*"))
    held = {d for k, d in enumerate(directories)
            if k % args.observations >= args.observations - args.added}
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    params = root / "params.ini"

    def write(dirs):
        params.write_text(params_text(
            "[" + ", ".join(f"'{d}'" for d in dirs) + "]", out, default_caldb_dir(),
            imag_out=("ECL-SOP-IMA",),
            extra={"mosa": {"out_files": "['ECL-MOS-IMA', 'ECL-MOS-SOP', 'ECL-MOS-LCS']"}}))

    script = str(Path(sys.executable).parent / "ecpi_run")
    env = child_env(args.cache, cold_imports=False)
    runs = []
    for name, dirs in (("first", [d for d in directories if d not in held]),
                       ("rerun", [d for d in directories if d not in held]),
                       (f"{len(held)} added", directories)):
        write(dirs)
        run = measure([script, str(params)], env)
        summary = next((line for line in run["stdout"].splitlines()
                        if line.startswith("ecpi_run:")), run["stderr"][-500:])
        runs.append((name, len(dirs), run, summary))
    print(f"{'run':>10} {'observations':>12} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>11} "
          f"{'load':>5}  summary")
    for name, n, run, summary in runs:
        print(f"{name:>10} {n:>12} {run['seconds']:>8.1f} {run['user_s'] + run['sys_s']:>8.1f} "
              f"{run['peak_rss_mb']:>11.0f} {run['load']:>5.1f}  {summary[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
