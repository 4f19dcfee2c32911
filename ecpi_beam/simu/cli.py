"""`ecpi_simulate`: write the ICD input triplet and truth file of a scenario (docs/simulator.md).

    ecpi_simulate input/                             # the demo scenario
    ecpi_simulate scenario.toml input/ [--caldb DIR] [--seed N] [--duration S]
    (--out DIR may replace the positional output directory)
    ecpi_simulate [SCENARIO] --drip DIR --speed 10 [--slice-seconds 10] [--late SEQ:N]
                  [--truncate SEQ]                   # replay as timed slices (streaming)
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
    parser.add_argument("--drip", default=None, metavar="DIR",
                        help="replay the observation into DIR as timed slices (docs/streaming.md)")
    parser.add_argument("--speed", type=float, default=10.0,
                        help="with --drip: replay speed, times real time (default 10)")
    parser.add_argument("--slice-seconds", type=float, default=10.0,
                        help="with --drip: mission seconds per slice (default 10)")
    parser.add_argument("--late", action="append", default=[], metavar="SEQ:N",
                        help="with --drip: write event slice SEQ only after N more slices")
    parser.add_argument("--truncate", action="append", type=int, default=[], metavar="SEQ",
                        help="with --drip: write event slice SEQ cut short (a damaged file)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.drip:
        return _drip(args)
    scenario_path, out_dir = _split_paths(args.paths, args.out)
    scenario = _scenario(args, scenario_path)
    caldb = Caldb.open(args.caldb or default_caldb_dir())
    started = time.perf_counter()
    truth = simulate(scenario, out_dir, caldb, chunk_seconds=args.chunk_seconds)
    elapsed = time.perf_counter() - started
    print(f"ecpi_simulate: {scenario.name} obs_id {truth.obs_id}: {truth.n_events} events in "
          f"{scenario.duration:g} s written to {out_dir} ({elapsed:.1f} s)")
    return 0


def _scenario(args, scenario_path):
    scenario = load_scenario(scenario_path) if scenario_path else default_scenario()
    changes = {k: v for k, v in (("seed", args.seed), ("duration", args.duration)) if v is not None}
    return dataclasses.replace(scenario, **changes) if changes else scenario


def _drip(args) -> int:
    from ecpi_beam.simu.drip import drip

    if len(args.paths) > 1 or args.out:
        raise EcpiError("ecpi_simulate --drip DIR: give at most a SCENARIO, the output is DIR")
    scenario = _scenario(args, args.paths[0] if args.paths else None)
    late = dict(_late_slice(text) for text in args.late)
    started = time.perf_counter()
    truth = drip(scenario, args.drip, Caldb.open(args.caldb or default_caldb_dir()),
                 speed=args.speed, slice_seconds=args.slice_seconds, late=late,
                 truncate=tuple(args.truncate))
    print(f"ecpi_simulate: {scenario.name} obs_id {truth.obs_id}: {truth.n_events} events "
          f"dripped into {args.drip} as {args.slice_seconds:g} s slices at {args.speed:g}x "
          f"({time.perf_counter() - started:.1f} s)")
    return 0


def _late_slice(text: str) -> tuple[int, int]:
    seq, _, count = text.partition(":")
    try:
        return int(seq), int(count or 1)
    except ValueError:
        raise EcpiError(f"--late {text}: expected SEQ:N, e.g. 12:3 (slice 12 after 3 more)") from None


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
