"""`python -m ecpi_beam.run --params params.ini --runner DirectRunner` and `ecpi_run params.ini`.

The options (ours and Beam's: runner, workers, ...) are those of ecpi_beam/options.py.
"""
from __future__ import annotations

import logging
import sys
import time

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from ecpi_beam.campaign import run_campaign
from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs
from ecpi_beam.kernels.calibrate import DROP_REASONS
from ecpi_beam.logs import configure_logging, log_stage_summary, worker_logging_args
from ecpi_beam.options import STREAM_IDLE_TIMEOUT, parse_command_line, with_runner_defaults
from ecpi_beam.params import load_params
from ecpi_beam.pipelines.observation import build_observation_pipeline
from ecpi_beam.pipelines import safeguards
from ecpi_beam.pipelines.direct import runner_for
from ecpi_beam.pipelines.preflight import check_capabilities, preflight_observations
from ecpi_beam.transforms.failures import (FAILURES_FILE, collect_failures,
                                           remove_dead_letters)
from ecpi_beam.workspace import resolve_caldb_dir

log = logging.getLogger("ecpi_beam")


def parse_args(argv):
    """(parameter file, Beam arguments)."""
    return parse_command(argv)[:2]


def parse_command(argv):
    """(parameter file, Beam arguments, EcpiRunOptions): options.parse_command_line, which
    rejects unknowns.

    With --streaming (Beam's flag), the arguments end with `--stream_idle_timeout S` (inf when
    not given), as pipelines/stream.py expects them."""
    command_line = parse_command_line(argv)
    beam_args = _without_option(command_line.beam_args, STREAM_IDLE_TIMEOUT)
    timeout = command_line.options.stream_idle_timeout
    if command_line.options.view_as(StandardOptions).streaming:
        beam_args = [*beam_args, STREAM_IDLE_TIMEOUT,
                     str(timeout if timeout is not None else float("inf"))]
    elif timeout is not None:
        raise EcpiError(f"{STREAM_IDLE_TIMEOUT}: only with --streaming")
    return command_line.params_path, beam_args, command_line.options


def _without_option(args, option: str) -> list:
    """`args` without `option VALUE` and `option=VALUE`."""
    kept, skip_value = [], False
    for arg in args:
        if skip_value or arg.startswith(option + "="):
            skip_value = False
            continue
        skip_value = arg == option
        if not skip_value:
            kept.append(arg)
    return kept


def with_params_file(err: EcpiError, path: str) -> EcpiError:
    """'[section] key: ...' errors named by the parameter file they are about (one format:
    '<file>: [section] key: ...'); other errors unchanged."""
    return EcpiError(f"{path}: {err}") if str(err).startswith("[") else err


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
    with beam.Pipeline(runner=runner_for(options), options=options) as pipeline:
        build_observation_pipeline(pipeline, params, caldb_dir, observation_dirs)
    result = pipeline.result if hasattr(pipeline, "result") else None
    totals = metric_totals(result) if result is not None else {}
    return totals, collect_failures(params.general.working_out)


def main(argv) -> int:
    started = time.time()
    path, beam_args, args = parse_command(argv)
    params = load_params(path)
    configure_logging(params.general.logger_level)
    beam_args = with_runner_defaults(worker_logging_args(params.general.logger_level, beam_args))
    try:
        # writable, one run at a time, leftovers of earlier runs removed (docs/reliability.md)
        with safeguards.guarded_working_out(params.general.working_out):
            return run_in_working_out(params, beam_args, started, args)
    except EcpiError as err:
        raise with_params_file(err, path) from None


def run_in_working_out(params, beam_args, started, args) -> int:
    check_capabilities(params)
    caldb_dir = resolve_caldb_dir(params.general.caldb_dir)
    safeguards.check_caldb(caldb_dir)
    if "--streaming" in beam_args:
        from ecpi_beam.pipelines.stream import run_streaming_command

        return run_streaming_command(params, beam_args, caldb_dir, started)
    observation_dirs = fs.find_observation_dirs(params.general.working_in)
    preflight_observations(observation_dirs)
    log.info("%d observation(s) to process, CALDB %s", len(observation_dirs), caldb_dir)
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
    log_stage_summary(totals)
    for failure in failures:
        print(f"error: {failure.get('error')}", file=sys.stderr)  # the error names the obs dir
    for line in not_made:
        print(f"warning: {line}", file=sys.stderr)
    failed = {failure.get("obs_dir") or failure.get("obs_id") for failure in failures}
    done = len(observation_dirs) - len(failed)
    skipped = sum(entry.status == "skipped" for entry in entries)
    dropped = ", ".join(f"{reason} {int(totals.get(f'ecpi.cali.dropped_{reason}', 0))}"
                        for reason in DROP_REASONS)
    limited = int(totals.get("ecpi.imag.cleaning_limit_reached", 0))
    cleaning_limit = (f"cleaning stopped at its safety limit in {limited} image(s); "
                      if limited else "")
    off_pointing = int(totals.get("ecpi.bube.good_seconds_off_pointing", 0))
    not_imaged = (f"good time not imaged (other pointings) {off_pointing} s; "
                  if off_pointing else "")
    print(f"ecpi_run: {done}/{len(observation_dirs)} observation(s) processed"
          + (f" ({skipped} already done, skipped)" if skipped else "") + " in "
          f"{time.time() - started:.1f} s; events read {int(totals.get('ecpi.read.events', 0))}, "
          f"calibrated {int(totals.get('ecpi.cali.events_out', 0))} (dropped: {dropped}); "
          f"products {int(totals.get('ecpi.write.products_written', 0))}; "
          f"sources {int(totals.get('ecpi.imag.sources_found', 0))} "
          f"({int(totals.get('ecpi.imag.new_sources', 0))} new); {cleaning_limit}{not_imaged}"
          + (f"requested products not made {len(not_made)}; " if not_made else "") +
          f"products in {params.general.working_out}")
    return 2 if failures else 0


if __name__ == "__main__":
    from ecpi_beam.cli import ecpi_run_command

    ecpi_run_command()
