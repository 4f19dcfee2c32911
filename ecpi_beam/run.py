"""`python -m ecpi_beam.run --params params.ini --runner DirectRunner` and `ecpi_run params.ini`.

Every option that is not ours is passed to Beam's PipelineOptions (runner, workers, ...).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from ecpi_beam.campaign import run_campaign
from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs
from ecpi_beam.kernels.calibrate import DROP_REASONS
from ecpi_beam.params import load_params
from ecpi_beam.pipelines.observation import build_observation_pipeline
from ecpi_beam.pipelines import safeguards
from ecpi_beam.pipelines.preflight import check_capabilities, preflight_observations
from ecpi_beam.transforms.failures import (FAILURES_FILE, collect_failures,
                                           remove_dead_letters)
from ecpi_beam.workspace import resolve_caldb_dir

log = logging.getLogger("ecpi_beam")


def parse_args(argv):
    """(parameter file, Beam options)."""
    return parse_command(argv)[:2]


def parse_command(argv):
    """(parameter file, Beam options, our other options: force, campaign_batch)."""
    parser = argparse.ArgumentParser(
        prog="ecpi_run", description="Run the ECLAIRs pipeline (DPCO, CALI, BUBE, IMAG) on Beam.",
        epilog="Other options (--runner, --direct_num_workers, ...) go to Beam's PipelineOptions.")
    parser.add_argument("--params", dest="params_option", help="the parameter file (.ini)")
    parser.add_argument("--streaming", action="store_true",
                        help="watch working_in for slices and alert on new transients "
                             "(docs/streaming.md)")
    parser.add_argument("--stream_idle_timeout", type=float, default=None, metavar="S",
                        help="with --streaming: stop after S seconds without a new slice")
    parser.add_argument("--force", action="store_true",
                        help="redo every observation, even those whose products are complete "
                             "with the same parameters and CALDB (campaign resume)")
    parser.add_argument("--campaign_batch", type=int, default=None, metavar="N",
                        help="observations per pipeline run (default: 4 on the DirectRunner, "
                             "all at once on other runners); 0 = all at once")
    argv = list(argv)
    # The positional form is `ecpi_run params.ini [beam options]`: only the first argument, so
    # that the value of a Beam option (`--runner DirectRunner`) is never taken for it.
    params_file = argv.pop(0) if argv and not argv[0].startswith("-") else None
    args, beam_args = parser.parse_known_args(argv)
    path = args.params_option or params_file
    if not path:
        raise EcpiError("no parameter file: give it as `ecpi_run params.ini` or --params params.ini")
    if not any(arg.startswith("--runner") for arg in beam_args):
        beam_args = ["--runner", "DirectRunner", *beam_args]
    if args.streaming:
        beam_args = [*beam_args, "--streaming", "--stream_idle_timeout",
                     str(args.stream_idle_timeout if args.stream_idle_timeout is not None
                         else float("inf"))]
    elif args.stream_idle_timeout is not None:
        raise EcpiError("--stream_idle_timeout: only with --streaming")
    return path, beam_args, args


def configure_logging(level_name: str):
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(getattr(logging, level_name.upper()))


def metric_totals(result):
    """Counter name -> total over steps, for the summary line (Metrics are the log of record)."""
    totals = {}
    try:
        counters = result.metrics().query(MetricsFilter())["counters"]
    except NotImplementedError:  # the DaskRunner has no metrics yet
        return totals
    for counter in counters:
        name = f"{counter.key.metric.namespace}.{counter.key.metric.name}"
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[name] = totals.get(name, 0) + (value or 0)
    return totals


def run(params, beam_args, caldb_dir, observation_dirs):
    """Build and run the pipeline; returns (metric totals, failure records)."""
    stale = fs.inside(params.general.working_out, FAILURES_FILE)
    if fs.exists(stale):
        fs.remove(stale)
    remove_dead_letters(params.general.working_out)
    options = PipelineOptions(beam_args)
    with beam.Pipeline(options=options) as pipeline:
        build_observation_pipeline(pipeline, params, caldb_dir, observation_dirs)
    result = pipeline.result if hasattr(pipeline, "result") else None
    totals = metric_totals(result) if result is not None else {}
    return totals, collect_failures(params.general.working_out)


def main(argv) -> int:
    started = time.time()
    path, beam_args, args = parse_command(argv)
    params = load_params(path)
    configure_logging(params.general.logger_level)
    # writable, one run at a time, leftovers of earlier runs removed (docs/reliability.md)
    with safeguards.guarded_working_out(params.general.working_out):
        return run_in_working_out(params, beam_args, started, args)


def run_in_working_out(params, beam_args, started, args) -> int:
    check_capabilities(params)
    caldb_dir = resolve_caldb_dir(params.general.caldb_dir)
    safeguards.check_caldb(caldb_dir)
    if "--streaming" in beam_args:
        from ecpi_beam.pipelines.stream import run_streaming_command

        return run_streaming_command(params, beam_args, caldb_dir, started)
    observation_dirs = fs.find_observation_dirs(params.general.working_in)
    preflight_observations(observation_dirs)
    ids = safeguards.observation_ids(observation_dirs)
    _, early_failures = safeguards.set_aside_duplicates(ids)  # run_campaign sets them aside

    def run_wave(dirs):
        try:
            return run(params, beam_args, caldb_dir, dirs)
        except Exception as error:  # a fault of the machine is one line; a bug keeps its traceback
            fault = safeguards.one_line_fault(error)
            if fault is None:
                raise
            raise fault from None

    entries, totals, _ = run_campaign(params, beam_args, caldb_dir, observation_dirs, run_wave,
                                      force=args.force, batch=args.campaign_batch, ids=ids,
                                      set_aside=early_failures)
    failures, not_made = safeguards.finish_run(params, ids, early_failures)
    for failure in failures:
        print(f"error: {failure.get('error')}", file=sys.stderr)  # the error names the obs dir
    for line in not_made:
        print(f"warning: {line}", file=sys.stderr)
    failed = {failure.get("obs_dir") or failure.get("obs_id") for failure in failures}
    done = len(observation_dirs) - len(failed)
    skipped = sum(entry.status == "skipped" for entry in entries)
    dropped = ", ".join(f"{reason} {int(totals.get(f'ecpi.cali.dropped_{reason}', 0))}"
                        for reason in DROP_REASONS)
    print(f"ecpi_run: {done}/{len(observation_dirs)} observation(s) processed"
          + (f" ({skipped} already done, skipped)" if skipped else "") + " in "
          f"{time.time() - started:.1f} s; events read {int(totals.get('ecpi.read.events', 0))}, "
          f"calibrated {int(totals.get('ecpi.cali.events_out', 0))} (dropped: {dropped}); "
          f"products {int(totals.get('ecpi.write.products_written', 0))}; "
          f"sources {int(totals.get('ecpi.imag.sources_found', 0))}; "
          + (f"requested products not made {len(not_made)}; " if not_made else "") +
          f"products in {params.general.working_out}")
    return 2 if failures else 0


if __name__ == "__main__":
    from ecpi_beam.cli import ecpi_run

    sys.exit(ecpi_run(sys.argv[1:]))
