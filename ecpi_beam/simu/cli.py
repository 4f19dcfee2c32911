"""`ecpi_simulate`: write the ICD input triplet and truth file of a scenario (docs/simulator.md).

    ecpi_simulate input/                             # the demo scenario
    ecpi_simulate scenario.toml input/ [--caldb DIR] [--seed N] [--duration S]
    (--out DIR may replace the positional output directory)
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.errors import EcpiError
from ecpi_beam.simu.scenario import default_scenario, load_scenario
from ecpi_beam.simu.simulate import simulate

SCENARIO_SUFFIXES = (".toml", ".ini", ".cfg")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecpi_simulate", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", metavar="[SCENARIO] [OUT_DIR]",
                        help=".toml or .ini scenario (default: the demo), output directory")
    parser.add_argument("--out", default=None, help="output directory (created if missing)")
    parser.add_argument("--caldb", default=None, help="CALDB directory or URL (default: shipped)")
    parser.add_argument("--seed", type=int, default=None, help="override the scenario seed")
    parser.add_argument("--duration", type=float, default=None, help="override duration (s)")
    parser.add_argument("--chunk-seconds", type=float, default=10.0,
                        help="time chunk streamed at once (s)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    scenario_path, out_dir = _split_paths(args.paths, args.out)
    scenario = load_scenario(scenario_path) if scenario_path else default_scenario()
    changes = {k: v for k, v in (("seed", args.seed), ("duration", args.duration)) if v is not None}
    if changes:
        scenario = dataclasses.replace(scenario, **changes)
    caldb = Caldb.open(args.caldb or default_caldb_dir())
    started = time.perf_counter()
    truth = simulate(scenario, out_dir, caldb, chunk_seconds=args.chunk_seconds)
    elapsed = time.perf_counter() - started
    print(f"ecpi_simulate: {scenario.name} obs_id {truth.obs_id}: {truth.n_events} events in "
          f"{scenario.duration:g} s written to {out_dir} ({elapsed:.1f} s)")
    return 0


def _split_paths(paths: list[str], out: str | None) -> tuple[str | None, str]:
    """[SCENARIO] [OUT_DIR]: a lone path is the scenario if it names a .toml/.ini file."""
    paths = list(paths)
    if len(paths) > 2 or (out and len(paths) > 1):
        raise EcpiError(f"ecpi_simulate: too many paths {paths}; expected [SCENARIO] [OUT_DIR]")
    if out is None:
        if not paths or Path(paths[-1]).suffix.lower() in SCENARIO_SUFFIXES:
            raise EcpiError("ecpi_simulate: no output directory; give OUT_DIR or --out DIR")
        out = paths.pop()
    return (paths[0] if paths else None), out


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except EcpiError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
