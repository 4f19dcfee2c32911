"""Console scripts. Each maps a user mistake (EcpiError) to one line on stderr and exit code 2."""
from __future__ import annotations

import atexit
import gc
import importlib
import logging
import os
import sys
import threading

from ecpi_beam.errors import EcpiError


def _dispatch(module_name: str, argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        module = importlib.import_module(module_name)
        return int(module.main(argv) or 0)
    except EcpiError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def ecpi_run(argv=None) -> int:
    """`ecpi_run params.ini [beam options]`."""
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # until [general] logger_level
    return _dispatch("ecpi_beam.run", argv)


def ecpi_run_command() -> None:
    """The `ecpi_run` and `python -m ecpi_beam.run` commands: ecpi_run, then the process ends.

    The garbage collector waits while Beam, astropy and the pipeline are imported, and what
    they made is then frozen out of its sight (gc.freeze): those objects live as long as the
    process, and traversing them again and again cost a quarter of a second per run (about
    460 collections; 108 lighter ones remain)."""
    gc.disable()
    try:
        importlib.import_module("ecpi_beam.run")
    finally:
        gc.freeze()
        gc.enable()
    exit_without_teardown(ecpi_run())


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
