"""Beam's own fixed cost: the minimal bare-numpy chain run as one Beam Map, on the engine that
`ecpi_run --runner DirectRunner` uses for a batch pipeline (the FnApiRunner, in-process).

    python benchmarks/beam_floor.py OBS_DIR CALDB_DIR [bare_numpy_minimal.py's options]
    python benchmarks/beam_floor.py --empty          # one Create and one Map, no work at all

No ecpi_beam kernel runs: the pipeline is Create([arguments]) | Map(minimal chain), so the time
above bare_numpy_minimal.py's is what any Beam pipeline pays before doing the same science
(importing Beam, building and translating the graph, starting the runner). The process ends
as `ecpi_run` does (run.exit_without_teardown), so that the interpreter's teardown of Beam's
modules is not counted against Beam here and not in ecpi_run. It is the lower bound of
`ecpi_run` against the minimal chain (BENCHMARKS.md).
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_minimal_chain(argv) -> int:
    sys.path.insert(0, HERE)
    import bare_numpy_minimal  # imported in the worker: its imports count, as in the minimal

    return bare_numpy_minimal.main(list(argv))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from ecpi_beam.pipelines.direct import direct_batch_runner

    options = PipelineOptions(["--runner", "DirectRunner"])
    work = len if argv == ["--empty"] else run_minimal_chain
    with beam.Pipeline(runner=direct_batch_runner(options), options=options) as pipeline:
        _ = (pipeline | "Arguments" >> beam.Create([tuple(argv)])
             | "MinimalChain" >> beam.Map(work))
    return 0


if __name__ == "__main__":
    from ecpi_beam.run import exit_without_teardown

    exit_without_teardown(main())
