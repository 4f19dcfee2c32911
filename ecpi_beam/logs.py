"""Logging of ecpi_run: one level ([general] logger_level) for our loggers, Beam's and the SDK
workers', timestamps on every line, and what each stage did at `info`.

Beam configures the root logger on import, so `logging.basicConfig` alone does nothing; here
the root handlers are replaced (`force=True`). SDK worker processes (DirectRunner
multi_processing, portable runners) get the level through Beam's own worker options, and
import `ecpi_beam.worker_logging` (a Beam plugin) for the same line format.
"""
from __future__ import annotations

import json
import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG = logging.getLogger("ecpi_beam")
WORKER_PLUGIN = "ecpi_beam.worker_logging"
# The SDK harness's start-up notices (its __main__: "No semi_persistent_directory found";
# the options round trip: "Discarding unparseable args" of Beam's own flags) are not the
# user's to act on: shown only at `info` and below.
WORKER_START_UP_LOGGERS = ("__main__", "apache_beam.options.pipeline_options")
WORKER_LOG_RELAY = "apache_beam.runners.portability.local_job_service"
STAGE_ORDER = ("read", "dpco", "cali", "bube", "imag", "write")  # others follow, by name
# The SDK harness level as Java's LogLevel names it (OFF ERROR WARN INFO DEBUG TRACE): the
# Flink and Spark job servers parse the option and refuse the job on any other name; the
# Python SDK worker reads these names too (logging.WARN is logging.WARNING).
JAVA_LOG_LEVELS = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN",
                   logging.ERROR: "ERROR", logging.CRITICAL: "ERROR"}
# Beam's notices while it starts, waits for and stops a Java job server (FlinkRunner,
# SparkRunner), logged as warnings though nothing is wrong: shown at `info` and below.
JOB_SERVER_NOTICES = ("Really starting service at", "Really destroying service at",
                      "Waiting for grpc channel to be ready at")


class _JobServerNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING
                    and str(record.msg).startswith(JOB_SERVER_NOTICES))


def level_number(level_name: str) -> int:
    return getattr(logging, str(level_name).upper())


def configure_logging(level_name: str) -> int:
    """Timestamped lines on stderr at `level_name` for the root, ecpi_beam and apache_beam
    loggers of this process; returns the level."""
    level = level_number(level_name)
    logging.basicConfig(format=LOG_FORMAT, level=level, force=True)
    for name in ("ecpi_beam", "apache_beam"):
        logging.getLogger(name).setLevel(level)
    # the multi-process DirectRunner's workers print their own lines (worker_logging.py); the
    # job service's copy of each, a dump of the log proto, is shown at debug only
    logging.getLogger(WORKER_LOG_RELAY).setLevel(
        logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL + 1)
    if level >= logging.WARNING:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_JobServerNotices())
    return level


def _given(beam_args, option: str) -> bool:
    return any(arg == option or arg.startswith(option + "=") for arg in beam_args)


def worker_logging_args(level_name: str, beam_args) -> list:
    """`beam_args` plus the options giving SDK workers our level and format (unless given)."""
    level = level_number(level_name)
    extra = []
    if not _given(beam_args, "--default_sdk_harness_log_level"):
        extra.append(f"--default_sdk_harness_log_level={JAVA_LOG_LEVELS[level]}")
    if level >= logging.WARNING and not _given(beam_args, "--sdk_harness_log_level_overrides"):
        quiet = {name: "ERROR" for name in WORKER_START_UP_LOGGERS}
        extra.append(f"--sdk_harness_log_level_overrides={json.dumps(quiet)}")
    extra.append(f"--beam_plugins={WORKER_PLUGIN}")
    return [*beam_args, *extra]


def format_worker_handlers() -> None:
    """In an SDK worker: our line format on its stderr handlers (not on the handler that
    forwards records to the runner), our loggers at the worker's level."""
    root = logging.getLogger()
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler:  # pylint: disable=unidiomatic-typecheck
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
    LOG.setLevel(root.level)


def log_stage_summary(totals: dict) -> None:
    """At `info`, one line per stage with its counters ('ecpi.<stage>.<name>' Beam Metrics,
    summed over workers): what each stage did."""
    by_stage = {}
    for name, value in sorted(totals.items()):
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "ecpi" and value:
            by_stage.setdefault(parts[1], []).append(f"{parts[2]} {int(value)}")
    order = {stage: index for index, stage in enumerate(STAGE_ORDER)}
    for stage in sorted(by_stage, key=lambda stage: (order.get(stage, len(order)), stage)):
        LOG.info("%s: %s", stage.upper(), ", ".join(by_stage[stage]))
