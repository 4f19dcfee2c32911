"""Console scripts (setup.py entry points): the top floor, imported by no module of the package.

Each maps a user mistake (EcpiError) to one line on stderr and exit code 2 (errors.exit_code_of)."""
from __future__ import annotations

import gc
import importlib

from ecpi_beam.errors import exit_code_of


def _dispatch(module_name: str, argv=None) -> int:
    return exit_code_of(lambda args: importlib.import_module(module_name).main(args), argv)


def ecpi_run(argv=None) -> int:
    """`ecpi_run params.ini [beam options]`, returning its exit code (the process goes on)."""
    return _dispatch("ecpi_beam.run", argv)


def ecpi_run_command() -> None:
    """The `ecpi_run` console script: ecpi_run, then the process ends (run.command).

    The garbage collector waits while Beam, astropy and the pipeline are imported, and what
    they made is then frozen out of its sight (gc.freeze, in run.command): those objects live
    as long as the process, and traversing them again and again cost a quarter of a second per
    run (about 460 collections; 108 lighter ones remain)."""
    gc.disable()
    try:
        run = importlib.import_module("ecpi_beam.run")
    finally:
        gc.enable()
    run.command()


def caldb_init(argv=None) -> int:
    """`caldb_init -s` installs the shipped default set; `caldb_init` downloads it."""
    return _dispatch("ecpi_beam.caldb.init", argv)


def ecpi_conf_tool(argv=None) -> int:
    return _dispatch("ecpi_beam.workspace", argv)


def ecpi_simulate(argv=None) -> int:
    return _dispatch("ecpi_beam.simu.cli", argv)


def ecpi_demo(argv=None) -> int:
    return _dispatch("ecpi_beam.demo", argv)


def ecpi_quicklook(argv=None) -> int:
    """`ecpi_quicklook DIR`: PNGs and DS9 regions from existing products."""
    return _dispatch("ecpi_beam.quicklook", argv)


def ecpi_engine(argv=None) -> int:
    """`ecpi_engine start|stop flink|spark`, `ecpi_engine status` (docs/runners.md)."""
    return _dispatch("ecpi_beam.engines", argv)


def ecpi_engine_setup(argv=None) -> int:
    """`make engines` (engines/setup.sh): the job servers and distributions, into the cache."""
    return _dispatch("ecpi_beam.engine_setup", argv)
