"""`python -m ecpi_beam.run --params params.ini --runner DirectRunner` and `ecpi_run params.ini`.

The options (ours and Beam's: runner, workers, ...) are those of ecpi_beam/options.py.
"""
from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
import threading
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from ecpi_beam import campaign, progress
from ecpi_beam.errors import EcpiError, exit_code_of
from ecpi_beam.io import failures as failure_log, fs
from ecpi_beam.io.products import MOSAIC_OBS_ID
from ecpi_beam.io.progress import ProgressMarks
from ecpi_beam.logs import configure_logging, log_stage_summary, worker_logging_args
from ecpi_beam.options import STREAM_IDLE_TIMEOUT, parse_command_line, with_runner_defaults
from ecpi_beam.params import load_params
from ecpi_beam.pipelines.metrics import metric_totals  # noqa: F401 - also run.metric_totals
from ecpi_beam.pipelines.observation import build_observation_pipeline
from ecpi_beam.pipelines import safeguards
from ecpi_beam.pipelines.direct import runner_for
from ecpi_beam.pipelines.preflight import check_capabilities, preflight_observations
from ecpi_beam.summary import summary_line
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


def run_graph(beam_args, build) -> dict:
    """Run the graph `build(pipeline)` adds to a pipeline of `beam_args`; its metric totals."""
    options = PipelineOptions(beam_args)
    with beam.Pipeline(runner=runner_for(options), options=options) as pipeline:
        build(pipeline)
    result = pipeline.result if hasattr(pipeline, "result") else None
    return metric_totals(result) if result is not None else {}


def run(params, beam_args, caldb_dir, observation_dirs):
    """Build and run the pipeline; returns (metric totals, the run's failure records so far)."""
    failure_log.reserve_space(params.general.working_out)  # a full disk is still recorded
    marks = (ProgressMarks(params.general.working_out)
             if progress.wanted(params.general.working_out) else None)
    expected = progress.expected_elements(params, observation_dirs) if marks else {}
    with progress.shown(marks, expected):
        totals = run_graph(beam_args, lambda pipeline: build_observation_pipeline(
            pipeline, params, caldb_dir, observation_dirs, progress=marks))
    return totals, failure_log.gather(params.general.working_out)


def main(argv) -> int:
    started = time.time()
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # until [general] logger_level
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

    def contained(function, *arguments):
        try:
            return function(*arguments)
        except Exception as error:  # a fault of the machine is one line; a bug keeps its traceback
            fault = safeguards.one_line_fault(error)
            if fault is None:
                raise
            raise fault from None

    entries, totals, _ = campaign.run_campaign(
        params, beam_args, caldb_dir, observation_dirs,
        lambda dirs: contained(run, params, beam_args, caldb_dir, dirs), force=args.force,
        batch=args.campaign_batch, ids=ids, set_aside=early_failures)
    if len(entries) == 1 and entries[0].status == "skipped":  # a campaign's line says it
        print(f"ecpi_run: observation {entries[0].obs_id} ({entries[0].obs_dir}) already done "
              "with the same parameters and CALDB: --force redoes it", file=sys.stderr)
    failures, not_made = safeguards.finish_run(params, ids, early_failures)
    if params.wants_mosaic:  # the campaign's mosaic, of the observations that succeeded
        from ecpi_beam.pipelines.mosaic import run_campaign_mosaic

        mosaic_totals, failures = run_campaign_mosaic(
            params, caldb_dir, entries,
            lambda build: contained(run_graph, beam_args, build), force=args.force)
        for name, value in mosaic_totals.items():
            totals[name] = totals.get(name, 0) + value
    campaign.settle(entries, failures, params.general.working_out,
                    tuple(dict.fromkeys(params.wanted_products + params.observation_products)))
    campaign.write_summary(params.general.working_out, entries, started,
                           campaign.products_stamp(params, caldb_dir), totals,
                           **mosaic_summary(params, failures))
    log_stage_summary(totals)
    for failure in failures:
        print(f"error: {failure.get('error')}", file=sys.stderr)  # the error names the obs dir
    for line in not_made:
        print(f"warning: {line}", file=sys.stderr)
    print(summary_line(params, entries, totals, started, not_made))
    return 2 if failures else 0


def mosaic_summary(params, failures) -> dict:
    """campaign.json's 'mosaic' entry when MOSA was asked: its products made, or its error."""
    if not params.mosa.out_files:
        return {}
    error = next((failure.get("error") for failure in failures
                  if failure.get("obs_id") == MOSAIC_OBS_ID), None)
    made = campaign.made_products(params.general.working_out, [MOSAIC_OBS_ID],
                                  params.mosa.out_files)[MOSAIC_OBS_ID]
    return {"mosaic": {"products": made, "error": error}}


def command() -> None:
    """The `ecpi_run` and `python -m ecpi_beam.run` commands: ecpi_run on the process's
    arguments, then the process ends. What the imports made is frozen out of the garbage
    collector's sight first (cli.ecpi_run_command says why)."""
    gc.freeze()
    exit_without_teardown(exit_code_of(main))


def exit_without_teardown(code: int) -> None:
    """End the process with `code` once the run is over and everything is written and closed:
    threads joined, atexit handlers run, logs and standard streams flushed, but not the
    interpreter's teardown of every module, which took half a second after each run (the
    modules of Beam, grpc and protobuf; mypy ends its runs the same way)."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    command()
