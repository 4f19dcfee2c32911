"""Console scripts. Each maps a user mistake (EcpiError) to one line on stderr and exit code 2."""
from __future__ import annotations

import importlib
import logging
import sys

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
