"""A Beam plugin (`--beam_plugins=ecpi_beam.worker_logging`, added by ecpi_run): imported by
each SDK worker once its log level is set, it gives the worker's log lines our format."""
from ecpi_beam.logs import format_worker_handlers

format_worker_handlers()
