"""ecpi_run's logging in the SDK workers: one format, one level, no import notices.

- As a Beam plugin (`--beam_plugins=ecpi_beam.worker_logging`, added by ecpi_run): imported by
  each SDK worker once its log level is set, it gives the worker's log lines our format.
- As the worker program of the multi-process DirectRunner (`python -m
  ecpi_beam.worker_logging`, which pipelines/direct.py starts instead of Beam's
  `python -m apache_beam.runners.worker.sdk_worker_main`): our format, our level and the filter
  of Beam's 'apitools not found' notice are set before Beam is imported, then Beam's worker
  runs. Started as Beam's own, each worker printed that notice and its start-up lines
  ('INFO:__main__:Logging handler created.') in Python's default format before the plugin
  could act.
"""
import json
import logging
import os
import sys

import ecpi_beam  # noqa: F401  (its root-logger filter drops Beam's import notice)
from ecpi_beam.logs import LOG_FORMAT, WORKER_START_UP_LOGGERS, format_worker_handlers

BEAM_WORKER_MODULE = "apache_beam.runners.worker.sdk_worker_main"


def worker_log_level(options_json) -> int:
    """The level ecpi_run gave the workers (Beam's `default_sdk_harness_log_level` option)."""
    try:
        options = json.loads(options_json or "{}")
    except ValueError:
        return logging.WARNING
    options = options.get("options", options)
    level = next((value for key, value in options.items()
                  if key in ("default_sdk_harness_log_level",
                             "beam:option:default_sdk_harness_log_level:v1")), "WARNING")
    return getattr(logging, str(level).upper(), logging.WARNING)


def run_worker() -> None:
    """Beam's SDK worker, with our logging from its first line."""
    level = worker_log_level(os.environ.get("PIPELINE_OPTIONS"))
    logging.basicConfig(format=LOG_FORMAT, level=level, stream=sys.stderr)
    if level > logging.INFO:  # its start-up notices: shown at info and below only
        for name in (*WORKER_START_UP_LOGGERS, BEAM_WORKER_MODULE):
            logging.getLogger(name).setLevel(logging.ERROR)
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    run_worker()
else:
    format_worker_handlers()
