"""Local Flink and Spark clusters started by `ecpi_engine` (docs/runners.md).

The clusters (marker `engine`) are started once each, by `ecpi_engine start` in a subprocess,
and stopped by `ecpi_engine stop`, which ends them by process id; a cluster that does not
start fails its test. On each, the campaign of three observations (one broken) is run through
the engine's Beam worker pool (`--environment_type EXTERNAL`, the options `start` prints) and
gives the same ECL-DET-IMA counts, the same sources and the same failures.jsonl as the
DirectRunner.
"""
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ecpi_beam import engines
from pipeline_fixtures import (
    describe, detector_counts, nearest_source, run_ecpi, simulate_broken_campaign,
    sources_table, write_params)
from test_runners import _free_port, _start, _stop, _wait_for_port

CAMPAIGN_PRODUCTS = dict(cali_out=[], bube_out=["ECL-DET-IMA"], imag_out=["ECL-SOP-IMA"])
ENGINE_TIMEOUT_S = 300


def ecpi_engine(*args, state: Path, env=None, timeout=ENGINE_TIMEOUT_S):
    env = dict(env or os.environ)
    env[engines.STATE_ENV] = str(state)
    return subprocess.run([sys.executable, "-m", "ecpi_beam.engines", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


# ============================================================================================
# The campaign and its DirectRunner reference
# ============================================================================================
@pytest.fixture(scope="module")
def engine_campaign(tmp_path_factory, pipeline_workspace):
    """(input glob, broken observation, DirectRunner working_out) of the broken campaign."""
    root = tmp_path_factory.mktemp("engine_campaign")
    observations, broken = simulate_broken_campaign(root, pipeline_workspace)
    out = root / "direct"
    out.mkdir()
    params = write_params(root / "params.ini", root / "input" / "obs_*", out,
                          **CAMPAIGN_PRODUCTS)
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert result.returncode == 2, describe(result)
    assert "2/3 observation(s) processed" in result.stdout, describe(result)
    return root / "input" / "obs_*", [o.obs_id for o in observations if o is not broken], out


def _failures(out: Path) -> list[dict]:
    return sorted((json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()
                   if line.strip()), key=json.dumps)


def assert_same_campaign(out: Path, reference: Path, good_obs_ids) -> None:
    assert _failures(out) == _failures(reference)
    for obs_id in good_obs_ids:
        ours = detector_counts(out / f"ECL-DET-IMA_{obs_id}.fits")
        theirs = detector_counts(reference / f"ECL-DET-IMA_{obs_id}.fits")
        assert sorted(ours) == sorted(theirs)
        for name in theirs:
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=f"{obs_id} {name}")
        found = sources_table(out / f"ECL-SOP-IMA_{obs_id}.fits")
        expected = sources_table(reference / f"ECL-SOP-IMA_{obs_id}.fits")
        assert len(found) == len(expected), (found, expected)
        for row in expected:
            match = nearest_source(found, row["RA"], row["DEC"], band=row["BAND"])
            assert match is not None and match[0] < 0.05, (row, match)
            assert np.isclose(match[1]["SNR"], row["SNR"], rtol=1e-3)


def run_through_worker_pool(options, tmp_path, workspace, campaign):
    """The campaign on Beam's job service with the cluster's worker pool as environment."""
    obs_glob, good_obs_ids, reference = campaign
    environment = options[options.index("--environment_type"):]
    assert environment[:2] == ["--environment_type", "EXTERNAL"], options
    port = _free_port()
    log = tmp_path / "job_service.log"
    service = _start([sys.executable, "-m",
                      "apache_beam.runners.portability.local_job_service_main",
                      "--port", str(port)], log)
    try:
        _wait_for_port(port, service, log)
        out = tmp_path / "out"
        out.mkdir()
        params = write_params(tmp_path / "params.ini", obs_glob, out, **CAMPAIGN_PRODUCTS)
        result = run_ecpi(params, "--runner", "PortableRunner", "--job_endpoint",
                          f"localhost:{port}", *environment, workspace=workspace,
                          working_out=out)
    finally:
        _stop(service)
    assert result.returncode == 2, describe(result)
    assert "2/3 observation(s) processed" in result.stdout, describe(result)
    assert_same_campaign(out, reference, good_obs_ids)


def started(engine: str, state: Path) -> list[str]:
    """`ecpi_engine start ENGINE`; the ecpi_run options of its last line."""
    result = ecpi_engine("start", engine, state=state)
    if result.returncode != 0:
        ecpi_engine("stop", engine, state=state)
        pytest.fail(f"ecpi_engine start {engine} failed ({result.returncode}):\n"
                    f"{result.stdout}\n{result.stderr}")
    return result.stdout.strip().splitlines()[-1].split()


def assert_stopped(engine: str, state: Path, ports) -> None:
    pids = engines.recorded(state / engine)
    assert set(pids) and all(engines.alive(entry) for entry in pids.values())
    result = ecpi_engine("stop", engine, state=state)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in pids), result.stdout
    assert not any(engines.alive(entry) for entry in pids.values())
    assert not any(_listening(port) for port in ports)
    assert "not running" in ecpi_engine("status", state=state).stdout


# ============================================================================================
# The clusters
# ============================================================================================
@pytest.mark.engine
def test_flink_session_cluster(tmp_path, pipeline_workspace, engine_campaign):
    state = tmp_path / "state"
    options = started("flink", state)
    try:
        assert options[:4] == ["--runner", "FlinkRunner", "--flink_master", "127.0.0.1:8081"]
        assert options[options.index("--flink_version") + 1] == "1.19"
        overview = _get_json("http://127.0.0.1:8081/overview")
        assert overview["flink-version"].startswith("1.19.")
        assert (overview["taskmanagers"], overview["slots-total"]) == (1, 2), overview
        status = ecpi_engine("status", state=state).stdout
        assert all(name in status.splitlines()[0]
                   for name in ("jobmanager", "taskmanager", "worker_pool")), status
        run_through_worker_pool(options, tmp_path, pipeline_workspace, engine_campaign)
        assert "Starting worker" in (state / "flink" / "logs" / "worker_pool.out").read_text()
    finally:
        assert_stopped("flink", state, (8081, 50000))


@pytest.mark.engine
def test_spark_standalone_cluster(tmp_path, pipeline_workspace, engine_campaign):
    state = tmp_path / "state"
    options = started("spark", state)
    try:
        assert options[:4] == ["--runner", "SparkRunner", "--spark_master_url",
                               "spark://127.0.0.1:7077"]
        master = _get_json("http://127.0.0.1:8080/json/")
        assert master["status"] == "ALIVE" and master["aliveworkers"] == 1, master
        assert master["cores"] == 2 and master["workers"][0]["host"] == "127.0.0.1", master
        run_through_worker_pool(options, tmp_path, pipeline_workspace, engine_campaign)
        assert "Starting worker" in (state / "spark" / "logs" / "worker_pool.out").read_text()
    finally:
        assert_stopped("spark", state, (7077, 8080, 50001))


# ============================================================================================
# Without a cluster
# ============================================================================================
def test_status_and_stop_with_nothing_started(tmp_path):
    assert ecpi_engine("status", state=tmp_path).stdout.splitlines() == [
        "flink: not running", "spark: not running"]
    result = ecpi_engine("stop", "spark", state=tmp_path)
    assert result.returncode == 0 and "nothing was running" in result.stdout


def test_a_missing_distribution_is_one_line_naming_it(tmp_path):
    env = dict(os.environ, ECPI_FLINK_HOME=str(tmp_path / "nowhere"))
    result = ecpi_engine("start", "flink", state=tmp_path / "state", env=env)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert "nowhere" in result.stderr and "make engines" in result.stderr, result.stderr
    assert engines.recorded(tmp_path / "state" / "flink") == {}


def test_a_stale_pid_file_is_not_taken_for_a_running_cluster(tmp_path):
    """A recorded process id that now belongs to another program is neither reported nor
    signalled (its command line lacks the markers)."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "flink").mkdir()
        (tmp_path / "flink" / "pids.json").write_text(json.dumps(
            {"jobmanager": {"pid": stranger.pid, "markers": ["StandaloneSessionCluster"]}}))
        assert "flink: not running" in ecpi_engine("status", state=tmp_path).stdout
        ecpi_engine("stop", "flink", state=tmp_path)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
