"""ecpi_run's command line (ecpi_beam/options.py): ours and Beam's options, nothing else."""
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

from ecpi_beam.errors import EcpiError
from ecpi_beam.options import EcpiRunOptions, parse_command_line


def test_positional_and_option_forms_give_the_parameter_file_and_beam_options():
    line = parse_command_line(["p.ini", "--direct_num_workers", "2"])
    assert line.params_path == "p.ini"
    assert line.options.view_as(StandardOptions).runner == "DirectRunner"  # the default
    assert line.options.view_as(DirectOptions).direct_num_workers == 2
    line = parse_command_line(["--params", "q.ini", "--runner", "DirectRunner"])
    assert line.params_path == "q.ini" and line.beam_args.count("--runner") == 1
    assert isinstance(line.options, EcpiRunOptions) and line.options.params == "q.ini"


@pytest.mark.parametrize("argv, expected", [
    (["p.ini", "--runer", "DirectRunner"], "unknown option --runer (did you mean --runner?)"),
    (["p.ini", "--direct_num_worker", "2"], "did you mean --direct_num_workers?"),
    (["p.ini", "--direct_num_workers", "two"], "--direct_num_workers: invalid int value"),
    (["p.ini", "other.ini"], "unexpected argument other.ini"),
    (["--runner", "DirectRunner"], "no parameter file"),
])
def test_mistakes_are_one_line_errors(argv, expected):
    with pytest.raises(EcpiError, match="ecpi_run: ") as caught:
        parse_command_line(argv)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("runner, expected", [
    ("DirectRuner", "--runner DirectRuner: unknown runner (did you mean DirectRunner?)"),
    ("FlinkRuner", "(did you mean FlinkRunner?)"),
    ("DaskRunner", "(did you mean apache_beam.runners.dask.dask_runner.DaskRunner?)"),
    ("Xyz", "--runner Xyz: unknown runner; expected DirectRunner, PortableRunner"),
    ("no.such.module.Runner", "--runner no.such.module.Runner: cannot import this runner class "
                              "(ModuleNotFoundError"),
    ("apache_beam.runners.portability.portable_runner.NoSuchRunner", "AttributeError"),
])
def test_a_mistyped_runner_is_one_line_with_a_suggestion(runner, expected):
    with pytest.raises(EcpiError) as caught:
        parse_command_line(["p.ini", "--runner", runner])
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(EcpiError):
        parse_command_line(["p.ini", f"--runner={runner}"])


@pytest.mark.parametrize("runner", ["DirectRunner", "directrunner", "Direct", "PortableRunner",
                                    "FlinkRunner", "SparkRunner", "PrismRunner",
                                    "apache_beam.runners.dask.dask_runner.DaskRunner"])
def test_the_runners_beam_knows_are_accepted(runner):
    assert parse_command_line(["p.ini", "--runner", runner]).params_path == "p.ini"


def _ecpi_run(*args):
    return subprocess.run([sys.executable, "-m", "ecpi_beam.run", *args], capture_output=True,
                          text=True, timeout=120)


def test_a_mistyped_option_exits_2_with_one_line(tmp_path):
    params = tmp_path / "params.ini"
    params.write_text("[general]\n")
    result = _ecpi_run(str(params), "--runer", "DirectRunner")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: ecpi_run: unknown option --runer (did you mean --runner?); `ecpi_run --help` "
        "lists the options, `ecpi_run --help-beam` Beam's"]
    assert "Discarding" not in result.stdout + result.stderr


def test_a_mistyped_runner_exits_2_with_one_line_before_reading_anything(tmp_path):
    result = _ecpi_run(str(tmp_path / "absent.ini"), "--runner", "DirectRuner")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: ecpi_run: --runner DirectRuner: unknown runner (did you mean DirectRunner?); "
        "expected DirectRunner, PortableRunner, FlinkRunner, SparkRunner, PrismRunner, "
        "DataflowRunner or the full name of a runner class such as "
        "apache_beam.runners.dask.dask_runner.DaskRunner"]


def test_help_shows_the_parameter_file_our_options_and_how_to_list_beams():
    result = _ecpi_run("--help")
    assert result.returncode == 0, result.stderr
    for text in ("PARAMS.INI", "--params", "--help-beam"):
        assert text in result.stdout
    for component, product in (("DPCO", "duplicated events"), ("CALI", "ECL-EVT-CAL"),
                               ("BUBE", "ECL-EAR-OFM"), ("IMAG", "ECL-SOP-IMA"),
                               ("MOSA", "ECL-MOS-SOP"), ("SPEX", "ECL-LCS-S1")):
        # every component is described, with its products (only four were)
        line = next(line for line in result.stdout.splitlines()
                    if line.startswith(f"  {component}  "))
        assert product in result.stdout[result.stdout.index(line):], component
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    beam = _ecpi_run("--help-beam")
    assert beam.returncode == 0 and "--direct_num_workers" in beam.stdout


def test_streaming_options_reach_the_stream_command_in_one_form():
    from ecpi_beam.run import parse_args

    _, args = parse_args(["p.ini", "--streaming"])
    assert args[-2:] == ["--stream_idle_timeout", "inf"] and "--streaming" in args
    _, args = parse_args(["p.ini", "--stream_idle_timeout=5", "--streaming"])
    assert args[-2:] == ["--stream_idle_timeout", "5.0"]
    assert sum(arg.startswith("--stream_idle_timeout") for arg in args) == 1
    with pytest.raises(EcpiError, match="--stream_idle_timeout: only with --streaming"):
        parse_args(["p.ini", "--stream_idle_timeout", "5"])
