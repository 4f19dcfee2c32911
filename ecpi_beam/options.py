"""`ecpi_run`'s command line: the project's options as a Beam PipelineOptions subclass.

`ecpi_run params.ini [options]` or `python -m ecpi_beam.run --params params.ini [options]`.
Every option is checked against ours and Beam's (all PipelineOptions subclasses), so a
mistyped one (`--runer`, `--direct_num_worker`) is a one-line error (exit 2) instead of Beam's
"Discarding unparseable args" warning and a run with defaults. An option of ecpi_run is one
`parser.add_argument` line in `EcpiRunOptions._add_argparse_args`.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import textwrap
from typing import NamedTuple

from apache_beam.options.pipeline_options import (PipelineOptions, StandardOptions,
                                                  _BeamArgumentParser)

from ecpi_beam.errors import EcpiError

PROG = "ecpi_run"
BEAM_HELP = "--help-beam"
DEFAULT_RUNNER = "DirectRunner"
STREAM_IDLE_TIMEOUT = "--stream_idle_timeout"
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"  # Beam knows it by this name


class EcpiRunOptions(PipelineOptions):
    """The options of ecpi_run itself (Beam's own are listed by `ecpi_run --help-beam`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--params", default=None, metavar="PARAMS.INI",
                            help="the parameter file, if not given first")
        parser.add_argument(STREAM_IDLE_TIMEOUT, type=float, default=None, metavar="S",
                            help="with --streaming (Beam's: watch working_in for slices and "
                                 "alert on new transients, docs/streaming.md): stop after S "
                                 "seconds without a new slice")
        parser.add_argument("--force", action="store_true", default=False,
                            help="redo every observation, even those whose products are "
                                 "complete with the same parameters and CALDB (campaign resume)")
        parser.add_argument("--campaign_batch", type=int, default=None, metavar="N",
                            help="observations per pipeline run (default: on the "
                                 "DirectRunner waves of about a minute, 4 to 32 observations; "
                                 "all at once on other runners); 0 = all at once")


FLINK_BATCH_EXECUTION_MODE = "--execution_mode_for_batch"


class JobServerOptions(PipelineOptions):
    """Options read by Beam's Java job servers that Python's runner options do not declare
    (so that they are known here, and passed on to the job server)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(FLINK_BATCH_EXECUTION_MODE, default=None,
                            choices=("PIPELINED", "PIPELINED_FORCED", "BATCH", "BATCH_FORCED"),
                            help="FlinkRunner, batch: how stages exchange data (Flink's "
                                 "ExecutionMode); ecpi_run's default is BATCH_FORCED (every "
                                 "exchange materialized: pipelined exchanges deadlock on the "
                                 "graph's diamonds, docs/runners.md)")


def option_value(args, option: str, default=None):
    """The value of `option` in a command line (`--option VALUE` or `--option=VALUE`, the
    last one given), without parsing all of Beam's options."""
    value = default
    for index, arg in enumerate(args):
        if arg == option and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    return value


def with_runner_defaults(beam_args) -> list:
    """`beam_args` plus what the graph needs on the runner chosen, unless given: on the
    FlinkRunner in batch, materialized exchanges (FLINK_BATCH_EXECUTION_MODE)."""
    runner = str(option_value(beam_args, "--runner", "")).lower()
    if (runner in ("flinkrunner", "flink") and "--streaming" not in beam_args
            and option_value(beam_args, FLINK_BATCH_EXECUTION_MODE) is None):
        return [*beam_args, FLINK_BATCH_EXECUTION_MODE, "BATCH_FORCED"]
    return list(beam_args)


class CommandLine(NamedTuple):
    params_path: str
    beam_args: list  # for PipelineOptions: ours and Beam's, --runner DirectRunner by default
    options: EcpiRunOptions


class _StrictParser(_BeamArgumentParser):
    """Beam's parser whose mistakes are EcpiErrors (one line) rather than usage + exit."""

    def error(self, message):
        raise EcpiError(f"{PROG}: {message}")


def _import_runner_options():
    """Runner options defined outside pipeline_options.py (imported only when installed).

    Importing the Dask runner costs about half a second (dask.distributed), so it is done only
    when an option is not known without it, or when every option is listed.
    """
    with contextlib.suppress(ImportError):
        import apache_beam.runners.dask.dask_runner  # noqa: F401  (DaskOptions)


def _all_options_parser(with_runner_options: bool = True) -> _StrictParser:
    """A parser knowing every option of every PipelineOptions subclass, as Beam collects them."""
    if with_runner_options:
        _import_runner_options()
    parser = _StrictParser(prog=PROG, allow_abbrev=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():  # Beam's own way (get_all_options)
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


HELP_WIDTH = 79
COMPONENTS = (  # what `ecpi_run --help` says of each component: its work and its products
    ("DPCO", "checks the input triplet (OBS_ID, coverage, columns, ranges, time order, "
             "duplicated events); no product"),
    ("CALI", "PHA to energy and PI, bad pixels dropped, good time: ECL-EVT-CAL, ECL-GTI-CAL"),
    ("BUBE", "Earth occultation classes, detector images per band and class, background "
             "correction: ECL-DET-IMA, ECL-DET-UBC, ECL-GTI-UBC, ECL-EAR-OFM"),
    ("IMAG", "sky images, source detection and the observation's catalogue, a VOEvent per new "
             "source: ECL-SKY-IMA, ECL-SOP-IMA"),
    ("MOSA", "one mosaic of the run's sky images (HEALPix or CAR) and its sources, with [mosa] "
             "out_files: ECL-MOS-IMA, ECL-MOS-SOP"),
    ("SPEX", "mask-weighted spectra (PHA, RMF, ARF) and light curves of the sources, with "
             "[spex] out_files: ECL-SPS-S1, ECL-LCS-S1"),
)


def help_parser() -> argparse.ArgumentParser:
    def wrapped(text, indent=""):
        return textwrap.fill(text, HELP_WIDTH, initial_indent=indent, break_on_hyphens=False,
                             subsequent_indent=" " * len(indent))

    components = "\n".join(wrapped(text, f"  {name}  ") for name, text in COMPONENTS)
    parser = argparse.ArgumentParser(
        prog=PROG, usage=f"{PROG} PARAMS.INI [options] [Beam options]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=wrapped("Run the ECLAIRs pipeline (DPCO, CALI, BUBE, IMAG, MOSA, SPEX) on "
                            "Apache Beam: the products each section's out_files asks for, for "
                            "one observation or a campaign.") + f"\n\ncomponents:\n{components}",
        epilog=wrapped(f"Beam's options (--runner, default {DEFAULT_RUNNER}; "
                       f"--direct_num_workers, --direct_running_mode, ...) are accepted too: "
                       f"`{PROG} {BEAM_HELP}` lists them. An option neither ours nor Beam's is "
                       "an error."))
    parser.add_argument("params_file", nargs="?", metavar="PARAMS.INI",
                        help="the parameter file (.ini, see docs/parameters.md)")
    EcpiRunOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    parser.add_argument(BEAM_HELP, action="store_true", help="list Beam's options and exit")
    return parser


def _suggestion(option: str, parser: argparse.ArgumentParser) -> str:
    known = [name for action in parser._actions for name in action.option_strings]
    close = difflib.get_close_matches(option.split("=", 1)[0], known, n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""


def check_runner(name) -> None:
    """`--runner NAME` names a runner Beam can make: one of its runner names (any case, with or
    without 'Runner', as Beam compares them) or the importable full name of a runner class.
    Checked before anything else, so a mistyped runner is one line even when there is nothing
    to run."""
    if name is None or not isinstance(name, str):
        return
    known = {path.rsplit(".", 1)[-1].lower(): path for path in StandardOptions.ALL_KNOWN_RUNNERS}
    path = known.get(name.lower()) or known.get(name.lower() + "runner")
    if path is not None and "direct" in path.lower():
        return  # made by pipelines/direct.py or Beam's own switch: nothing to import
    if path is not None or "." in name:
        module, _, attribute = (path or name).rpartition(".")
        try:  # Beam imports it to run anyway; a missing extra is one line here
            getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError, ValueError) as err:
            raise EcpiError(f"{PROG}: --runner {name}: cannot import this runner class "
                            f"({type(err).__name__}: {err})") from None
        return
    names = [*StandardOptions.KNOWN_RUNNER_NAMES, "DaskRunner"]
    close = difflib.get_close_matches(name.lower(), [n.lower() for n in names], n=1, cutoff=0.6)
    suggestion = next((n for n in names if close and n.lower() == close[0]), None)
    if suggestion == "DaskRunner":
        suggestion = DASK_RUNNER
    hint = f" (did you mean {suggestion}?)" if suggestion else ""
    raise EcpiError(f"{PROG}: --runner {name}: unknown runner{hint}; expected DirectRunner, "
                    "PortableRunner, FlinkRunner, SparkRunner, PrismRunner, DataflowRunner or "
                    f"the full name of a runner class such as {DASK_RUNNER}")


def parse_command_line(argv) -> CommandLine:
    """The parameter file and the pipeline options; EcpiError on any unknown option."""
    argv = list(argv)
    if any(arg in ("-h", "--help") for arg in argv):
        help_parser().print_help()
        raise SystemExit(0)
    if BEAM_HELP in argv:
        _all_options_parser().print_help()
        raise SystemExit(0)
    # The positional form is `ecpi_run params.ini [options]`: only the first argument, so that
    # the value of an option (`--runner DirectRunner`) is never taken for it.
    params_file = argv.pop(0) if argv and not argv[0].startswith("-") else None
    parser = _all_options_parser(with_runner_options=False)
    known, unknown = parser.parse_known_args(argv)
    if unknown:
        parser = _all_options_parser()
        known, unknown = parser.parse_known_args(argv)
    if unknown:
        first = next((arg for arg in unknown if arg.startswith("-")), unknown[0])
        kind = "unknown option" if first.startswith("-") else "unexpected argument"
        raise EcpiError(f"{PROG}: {kind} {first}{_suggestion(first, parser)}; "
                        f"`{PROG} --help` lists the options, `{PROG} {BEAM_HELP}` Beam's")
    check_runner(known.runner)
    path = known.params or params_file
    if not path:
        raise EcpiError(f"{PROG}: no parameter file: give it as `{PROG} params.ini` or "
                        "--params params.ini")
    if known.runner is None:
        argv = ["--runner", DEFAULT_RUNNER, *argv]
    options = PipelineOptions(argv)
    return CommandLine(path, argv, options.view_as(EcpiRunOptions))
