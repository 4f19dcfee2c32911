"""The engine of `--runner DirectRunner` for a batch pipeline, made without the switch.

Beam's DirectRunner is a switch: for each pipeline it checks whether the Prism runner or the
FnApiRunner supports it, importing Beam's Pub/Sub I/O (half a second of start-up, a warning
about missing Google client libraries) to look for streaming sources, then hands a batch
pipeline to the FnApiRunner with the options as its provision info. The observation graph is
always batch and always supported by the FnApiRunner (no TestStream, no Pub/Sub, no real-time
timers), so ecpi_run makes that FnApiRunner itself, exactly as the switch does. The options
the FnApiRunner reads (direct_num_workers, direct_running_mode) work unchanged, but with
`multi_processing` each worker process is `python -m ecpi_beam.worker_logging`, Beam's worker
with ecpi_run's logging from its first line. Streaming
pipelines (pipelines/stream.py) run on Beam's Prism runner instead.
"""
from __future__ import annotations

import sys

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

DIRECT_RUNNER_NAMES = ("directrunner", "direct")  # compared in lower case, as Beam does


def is_direct_batch(options: PipelineOptions) -> bool:
    standard = options.view_as(StandardOptions)
    runner = standard.runner
    return (not standard.streaming
            and (runner is None or (isinstance(runner, str)
                                    and runner.lower() in DIRECT_RUNNER_NAMES)))


def direct_batch_runner(options: PipelineOptions):
    """The FnApiRunner as DirectRunner.run_pipeline makes it for a batch pipeline."""
    from apache_beam.portability import python_urns
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    from ecpi_beam.worker_logging import BEAM_WORKER_MODULE

    class Runner(fn_runner.FnApiRunner):
        """Beam's worker processes (multi_processing) started as ecpi_beam.worker_logging."""

        def run_via_runner_api(self, pipeline_proto, options):
            beam_worker = f"{sys.executable} -m {BEAM_WORKER_MODULE}".encode()
            ours = f"{sys.executable} -m ecpi_beam.worker_logging".encode()
            for environment in pipeline_proto.components.environments.values():
                if (environment.urn == python_urns.SUBPROCESS_SDK
                        and environment.payload == beam_worker):
                    environment.payload = ours
            return super().run_via_runner_api(pipeline_proto, options)

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return Runner(provision_info=provision_info)


def runner_for(options: PipelineOptions):
    """The runner object to build the pipeline with: None lets Beam pick it by name."""
    return direct_batch_runner(options) if is_direct_batch(options) else None
