"""Logging of ecpi_run (ecpi_beam/logs.py): one level everywhere, timestamps, what each stage did."""
import logging
import re

from ecpi_beam import logs
from ecpi_beam.errors import EcpiError
from ecpi_beam.run import with_params_file

from pipeline_fixtures import run_ecpi, stderr_lines, write_params

TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")


def test_configure_logging_replaces_a_root_handler_set_before_and_sets_beams_level(capsys):
    logging.basicConfig(format="%(message)s")  # what an imported library may have done
    try:
        logs.configure_logging("error")
        assert logging.getLogger("apache_beam").level == logging.ERROR
        logging.getLogger("ecpi_beam.test").error("visible")
        logging.getLogger("apache_beam.test").warning("hidden")
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and TIMESTAMPED.match(lines[0]) and "visible" in lines[0]
    finally:
        logging.basicConfig(force=True)
        for name in ("ecpi_beam", "apache_beam"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_job_server_start_up_notices_only_below_warning(capsys):
    """Beam logs as warnings that it starts and waits for the Flink/Spark job server."""
    try:
        for level, shown in (("warning", 1), ("info", 3)):
            logs.configure_logging(level)
            server = logging.getLogger("apache_beam.utils.subprocess_server")
            server.warning("Really starting service at %s with cmd: %s", "localhost:1", "java")
            logging.warning("Waiting for grpc channel to be ready at %s.", "localhost:1")
            server.warning("Error bringing up service (attempt %d of %d): %s", 1, 3, "boom")
            lines = capsys.readouterr().err.splitlines()
            assert len(lines) == shown, lines
            assert "Error bringing up service" in lines[-1]
    finally:
        logging.basicConfig(force=True)
        for name in ("ecpi_beam", "apache_beam"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_workers_get_the_level_unless_the_user_gave_one():
    args = logs.worker_logging_args("warning", ["--runner", "DirectRunner"])
    # Java's level name (WARN, not WARNING): the Flink and Spark job servers parse it
    assert "--default_sdk_harness_log_level=WARN" in args
    for level, java in (("debug", "DEBUG"), ("info", "INFO"), ("error", "ERROR"),
                        ("critical", "ERROR")):
        assert f"--default_sdk_harness_log_level={java}" in logs.worker_logging_args(level, [])
    assert f"--beam_plugins={logs.WORKER_PLUGIN}" in args
    assert any(arg.startswith("--sdk_harness_log_level_overrides=") for arg in args)
    mine = logs.worker_logging_args("info", ["--default_sdk_harness_log_level=DEBUG"])
    assert [arg for arg in mine if "default_sdk" in arg] == ["--default_sdk_harness_log_level=DEBUG"]
    assert not any("overrides" in arg for arg in mine)  # at info, Beam's notices are shown


def test_section_errors_are_named_by_the_parameter_file():
    assert str(with_params_file(EcpiError("[imag] win_dim: bad"), "p.ini")) == \
        "p.ini: [imag] win_dim: bad"
    assert str(with_params_file(EcpiError("obs: DPCO found 1 problem"), "p.ini")) == \
        "obs: DPCO found 1 problem"


def test_multi_process_workers_obey_the_level_and_info_tells_each_stage(
        tmp_path, pipeline_workspace, small_observation):
    """At `warning`, the 2-process run prints nothing but its summary: no 'apitools not found'
    and no 'INFO:__main__:Logging handler created.' of each worker (printed before Beam reads
    any option: the workers are started as ecpi_beam.worker_logging); at `info` every line,
    the workers' too, is in one timestamped format."""
    out = tmp_path / "out"
    out.mkdir()
    params = write_params(tmp_path / "params.ini", small_observation.directory, out,
                          cali_out=(), bube_out=("ECL-DET-IMA",), imag_out=(),
                          logger_level="warning")
    workers = ("--direct_num_workers", "2", "--direct_running_mode", "multi_processing")
    quiet = run_ecpi(params, *workers, workspace=pipeline_workspace, working_out=out)
    assert quiet.returncode == 0, quiet.stderr
    assert stderr_lines(quiet.stderr) == [], quiet.stderr

    params.write_text(params.read_text().replace("logger_level = warning",
                                                 "logger_level = info"))
    loud = run_ecpi(params, "--force", *workers, workspace=pipeline_workspace,
                    working_out=out)  # --force: not a resume, a rerun
    assert loud.returncode == 0, loud.stderr
    records = [line for line in stderr_lines(loud.stderr) if not line.startswith(" ")]
    # (a Beam message may span lines: its continuation lines are indented)
    assert records and all(TIMESTAMPED.match(line) for line in records), loud.stderr
    text = loud.stderr
    for stage in ("DPCO ", "READ: ", "CALI: ", "BUBE ", "WRITE: products_written 1"):
        assert stage in text, (stage, text)
    assert "Python sdk harness exiting" in text  # the workers' own lines, in our format
    assert "apitools" not in text and "INFO:" not in text and "Worker: severity" not in text
