"""ecpi_run's progress line on a terminal, its silence elsewhere, and the line a rerun that has
nothing to do prints (issue: silence at the default level until the summary)."""
import io
import shutil
import sys

import pytest

from ecpi_beam import progress
from ecpi_beam.io.progress import ProgressMarks
from pipeline_fixtures import ALL_PRODUCTS, describe, run_ecpi, write_params


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self):
        return True


def test_the_line_names_the_stage_the_chunks_and_an_eta():
    expected = {"ReadEventChunk": 10, "CalibrateChunk": 10, "BinDetectorImages": 10,
                "MakeSkyImages": 5}
    counts = {"ReadEventChunk": 10, "CalibrateChunk": 10, "BinDetectorImages": 4,
              "WriteProductFile": 2}
    assert progress.progress_text(counts, expected, 30.0) == (
        "ecpi_run [BUBE] read 10/10 chunks, calibrated 10/10, binned 4/10, sky images 0/5, "
        "products 2; 0:00:30 elapsed, ETA 0:00:13")  # 24 of 35 elements done in 30 s
    assert "ETA --:--:--" in progress.progress_text({}, expected, 1.0)


def test_marks_are_counted_by_step_and_cleared(tmp_path):
    marks = ProgressMarks(str(tmp_path))
    for step in ("ReadEventChunk", "ReadEventChunk", "MakeSkyImages"):
        marks.mark(step)
    assert marks.counts() == {"ReadEventChunk": 2, "MakeSkyImages": 1}
    marks.clear()
    assert marks.counts() == {} and list(tmp_path.iterdir()) == []


def test_progress_only_on_a_terminal(tmp_path):
    assert progress.wanted(str(tmp_path), Terminal())
    assert not progress.wanted(str(tmp_path), io.StringIO())
    assert not progress.wanted("s3://bucket/out", Terminal())  # no listing of a bucket


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_a_run_shows_its_progress_on_a_terminal_and_is_quiet_otherwise(
        terminal, tmp_path, small_observation, pipeline_workspace, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    params = write_params(tmp_path / "params.ini", small_observation.directory, out)
    monkeypatch.setattr(progress, "DELAY_S", 0.0)  # this run is short: show it from the start
    monkeypatch.setattr(progress, "INTERVAL_S", 0.05)
    stderr = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    from ecpi_beam.cli import ecpi_run

    monkeypatch.setenv("ECPI_HOME", str(pipeline_workspace))
    code = ecpi_run([str(params)])
    assert code == 0, stderr.getvalue()
    drawn = [line for line in stderr.getvalue().split("\r") if line.startswith("ecpi_run [")]
    if terminal:
        assert drawn and "read " in drawn[-1] and " chunks" in drawn[-1] and "ETA" in drawn[-1]
        assert any(line.startswith("ecpi_run [WRITE]") for line in drawn), drawn[-3:]
        assert stderr.getvalue().endswith("\r")  # the line is cleared at the end
    else:
        assert drawn == [] and "\r" not in stderr.getvalue()
    assert not (out / ".ecpi-progress").exists()


def test_a_rerun_with_nothing_to_do_says_so_at_the_default_level(reference_run, tmp_path,
                                                                  small_observation,
                                                                  pipeline_workspace):
    out = tmp_path / "out"
    shutil.copytree(reference_run.working_out, out)
    params = write_params(tmp_path / "params.ini", small_observation.directory, out)
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert result.returncode == 0, describe(result)
    assert result.stderr.strip().splitlines() == [
        f"ecpi_run: observation {small_observation.obs_id} ({small_observation.directory}) "
        "already done with the same parameters and CALDB: --force redoes it"], describe(result)
    assert "1/1 observation(s) processed (1 already done, skipped)" in result.stdout
    assert ALL_PRODUCTS  # the reference made every product: nothing was left to do
