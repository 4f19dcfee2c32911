"""Flink and Spark executing the whole batch graph, through Beam's job servers
(docs/runners.md), and `ecpi_engine` / `make engines` without a cluster.

The clusters (marker `engine`, engine_fixtures.py) are started by `ecpi_engine start` on free
ports while every default port is held by the test process, and stopped by `ecpi_engine
stop`. On each, a campaign of three observations (one corrupt) asking for every product
(CALI, BUBE with ECL-EAR-OFM, IMAG, MOSA, SPEX) runs with the options that `start` printed:
Beam's FlinkRunner / SparkRunner, the job server assembled by `make engines`, the cluster's
worker pool. The engine must list the job as finished, and the products must be the
DirectRunner's: the same files; detector counts identical; sources within 0.05' and 0.1 % in
SNR; every other product's data the same to 1e-6 (compared as both runners wrote them, so a
change of MOSA or SPEX changes both sides); the same failures.jsonl; the same summary metrics.
"""
import json
import os
import re
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ecpi_beam import engine_setup, engines
from ecpi_beam.errors import EcpiError
from ecpi_beam.params import params_text
from engine_fixtures import DEFAULT_PORTS, ecpi_engine
from pipeline_fixtures import (
    _shared, describe, detector_counts, nearest_source, run_ecpi, simulate_broken_campaign,
    sources_table)

ENGINE_RUN_TIMEOUT_S = 1200
EVERY_PRODUCT = dict(
    cali_out=["ECL-GTI-CAL", "ECL-EVT-CAL"],
    bube_out=["ECL-DET-IMA", "ECL-DET-UBC", "ECL-GTI-UBC", "ECL-EAR-OFM"],
    imag_out=["ECL-SKY-IMA", "ECL-SOP-IMA"],
    extra={"mosa": {"out_files": "['ECL-MOS-IMA', 'ECL-MOS-SOP']"},
           "spex": {"out_files": "['ECL-SPS-S1', 'ECL-LCS-S1']"}})
SUMMARY_FIGURES = re.compile(r"events read .*?; sources \d+ \(\d+ new\)")
# header cards that say when or how long, not what
VOLATILE_XML = re.compile(r"<Date>[^<]*</Date>")


# ============================================================================================
# The campaign and its DirectRunner reference (made once per test session)
# ============================================================================================
def write_campaign_params(path: Path, working_in, working_out) -> Path:
    path.write_text(params_text(str(working_in), str(working_out), **EVERY_PRODUCT))
    return path


@pytest.fixture(scope="session")
def engine_campaign(tmp_path_factory, pipeline_workspace) -> dict:
    """{"input": glob, "good": [obs_id...], "reference": DirectRunner working_out,
    "summary": its summary line} for the campaign of three observations, one corrupt."""
    def build(root):
        observations, broken = simulate_broken_campaign(root, pipeline_workspace)
        out = root / "direct"
        out.mkdir()
        params = write_campaign_params(root / "params.ini", root / "input" / "obs_*", out)
        result = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
        return {"input": str(root / "input" / "obs_*"), "reference": str(out),
                "good": [o.obs_id for o in observations if o is not broken],
                "returncode": result.returncode, "stdout": result.stdout,
                "stderr": result.stderr}

    record = _shared(tmp_path_factory, "engine_campaign", build)
    assert record["returncode"] == 2, record
    assert "2/3 observation(s) processed" in record["stdout"], record
    return record


def run_campaign_on(options, tmp_path, workspace, campaign):
    out = tmp_path / "out"
    out.mkdir()
    params = write_campaign_params(tmp_path / "params.ini", campaign["input"], out)
    result = run_ecpi(params, *options, workspace=workspace, working_out=out,
                      timeout=ENGINE_RUN_TIMEOUT_S)
    assert result.returncode == 2, describe(result)
    assert "2/3 observation(s) processed" in result.stdout, describe(result)
    return result


# ============================================================================================
# Comparing two runs' products
# ============================================================================================
def _failures(out: Path) -> list[dict]:
    return sorted((json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()
                   if line.strip()), key=json.dumps)


def _product_names(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name != "campaign.json")


def _hdus(path: Path):
    with fits.open(path) as hdul:
        return [(hdu.name, None if hdu.data is None else np.array(hdu.data)) for hdu in hdul]


def assert_same_data(path: Path, reference: Path, rtol=1e-6) -> None:
    """The same HDUs, with the same data: integers and strings equal, floats within rtol."""
    ours, theirs = _hdus(path), _hdus(reference)
    assert [name for name, _ in ours] == [name for name, _ in theirs], path.name
    for (hdu, a), (_, b) in zip(ours, theirs):
        columns = a.dtype.names if a is not None and a.dtype.names else [None]
        for column in columns:
            x = a if column is None or a is None else a[column]
            y = b if column is None or b is None else b[column]
            where = f"{path.name} {hdu} {column or ''}"
            if x is None or y is None:
                assert x is None and y is None, where
            elif x.dtype.kind in "fc":
                np.testing.assert_allclose(x, y, rtol=rtol, atol=0, equal_nan=True,
                                           err_msg=where)
            else:
                np.testing.assert_array_equal(x, y, err_msg=where)


def assert_same_campaign(out: Path, reference: Path, good_obs_ids) -> None:
    assert _product_names(out) == _product_names(reference)
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
    for name in _product_names(reference):
        if name.endswith((".fits", ".rmf", ".arf")) and not name.startswith(
                ("ECL-DET-IMA_", "ECL-SOP-IMA_")):
            assert_same_data(out / name, reference / name)
        elif name.endswith(".xml"):  # VOEvent alerts: the same but for their date
            assert (VOLATILE_XML.sub("", (out / name).read_text())
                    == VOLATILE_XML.sub("", (reference / name).read_text())), name
    assert any(name.startswith("ECL-MOS-IMA") for name in _product_names(reference))
    assert any(name.startswith("ECL-SPS-S1") for name in _product_names(reference))


def assert_same_summary(result, campaign) -> None:
    """The summary line's figures (from the runner's metrics) are the DirectRunner's."""
    ours = SUMMARY_FIGURES.search(result.stdout)
    assert ours and ours.group(0) == SUMMARY_FIGURES.search(campaign["stdout"]).group(0), \
        (result.stdout, campaign["stdout"])


def option(options, name):
    return options[options.index(name) + 1]


def assert_on_free_ports(cluster) -> None:
    """The printed options name the cluster's ports, none of them a default (held)."""
    assert not set(cluster.ports.values()) & set(DEFAULT_PORTS), cluster.ports
    pool = option(cluster.options, "--environment_config")
    assert pool == f"127.0.0.1:{cluster.ports['worker-pool']}"
    assert option(cluster.options, "--environment_type") == "EXTERNAL"
    assert Path(option(cluster.options, f"--{cluster.engine}_job_server_jar")).is_file()


# ============================================================================================
# The clusters
# ============================================================================================
@pytest.mark.engine
def test_flink_runs_the_whole_campaign(tmp_path, pipeline_workspace, engine_campaign,
                                       flink_cluster):
    options = flink_cluster.options
    assert options[:4] == ["--runner", "FlinkRunner", "--flink_master",
                           f"127.0.0.1:{flink_cluster.ports['rest']}"]
    assert option(options, "--flink_version") == "1.19"
    assert_on_free_ports(flink_cluster)
    overview = flink_cluster.rest("/overview")
    assert overview["flink-version"].startswith("1.19.")
    assert (overview["taskmanagers"], overview["slots-total"]) == (1, 2), overview
    before = {job["jid"] for job in flink_cluster.rest("/jobs/overview")["jobs"]}

    result = run_campaign_on(options, tmp_path, pipeline_workspace, engine_campaign)

    jobs = [job for job in flink_cluster.rest("/jobs/overview")["jobs"]
            if job["jid"] not in before]
    # two jobs: the observations' pipeline, then the campaign's mosaic (pipelines/mosaic.py)
    assert [job["state"] for job in jobs] == ["FINISHED", "FINISHED"], jobs
    assert all(job["tasks"]["finished"] == job["tasks"]["total"] for job in jobs), jobs
    assert max(job["tasks"]["total"] for job in jobs) > 40, jobs
    assert_same_campaign(result.working_out, Path(engine_campaign["reference"]),
                         engine_campaign["good"])
    assert_same_summary(result, engine_campaign)


@pytest.mark.engine
def test_spark_runs_the_whole_campaign(tmp_path, pipeline_workspace, engine_campaign,
                                       spark_cluster):
    options = spark_cluster.options
    assert options[:4] == ["--runner", "SparkRunner", "--spark_master_url",
                           f"spark://127.0.0.1:{spark_cluster.ports['master']}"]
    assert_on_free_ports(spark_cluster)
    master = spark_cluster.rest("/json/")
    assert master["status"] == "ALIVE" and master["aliveworkers"] == 1, master
    assert master["cores"] == 2 and master["workers"][0]["host"] == "127.0.0.1", master
    before = {app["id"] for app in master["completedapps"]}

    result = run_campaign_on(options, tmp_path, pipeline_workspace, engine_campaign)

    apps = [app for app in spark_cluster.rest("/json/")["completedapps"]
            if app["id"] not in before]
    # two applications: the observations' pipeline, then the campaign's mosaic
    assert [app["state"] for app in apps] == ["FINISHED", "FINISHED"], apps
    assert all(app["name"].startswith("BeamApp") for app in apps), apps
    assert_same_campaign(result.working_out, Path(engine_campaign["reference"]),
                         engine_campaign["good"])
    assert_same_summary(result, engine_campaign)


# ============================================================================================
# What the engines need of the graph and of ecpi_run's options
# ============================================================================================
def test_the_event_path_reads_no_side_input(tmp_path, pipeline_workspace, engine_campaign):
    """Flink's and Spark's job servers start a new stage before every ParDo with a side input:
    the steps of each event chunk read none, so that they fuse and no chunk is stored between
    them (docs/runners.md, "What the engines needed", 10.)."""
    import apache_beam as beam
    from apache_beam.portability.api import beam_runner_api_pb2

    from ecpi_beam.params import load_params
    from ecpi_beam.pipelines.observation import build_observation_pipeline
    from ecpi_beam.workspace import resolve_caldb_dir

    out = tmp_path / "out"
    out.mkdir()
    params = load_params(str(write_campaign_params(tmp_path / "p.ini", engine_campaign["input"],
                                                   out)))
    pipeline = beam.Pipeline()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ECPI_HOME", str(pipeline_workspace))
        build_observation_pipeline(pipeline, params, resolve_caldb_dir("@local"), [
            str(p) for p in sorted(Path(engine_campaign["input"]).parent.glob("obs_*"))])
    side_inputs = {}
    for transform in pipeline.to_runner_api().components.transforms.values():
        if transform.spec.urn == "beam:transform:pardo:v1":
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            side_inputs[transform.unique_name] = len(payload.side_inputs)
    event_path = ("Read/ReadChunks", "Read/ReadChunksChunks", "Cali/Calibrate", "Bube/Bin")
    for name in event_path:
        matching = [n for n in side_inputs if n == name or n.startswith(name + "/ParDo")]
        assert matching and all(side_inputs[n] == 0 for n in matching), (name, side_inputs)
    assert side_inputs["Read/ChunkDescriptors"] == 1  # the timelines, before the reshuffle


def test_ecpi_run_adds_what_the_runners_need_unless_given():
    from ecpi_beam.options import option_value, with_runner_defaults

    assert with_runner_defaults(["--runner", "FlinkRunner"])[-2:] == [
        "--execution_mode_for_batch", "BATCH_FORCED"]
    assert with_runner_defaults(["--runner=FlinkRunner", "--execution_mode_for_batch=BATCH"]) \
        == ["--runner=FlinkRunner", "--execution_mode_for_batch=BATCH"]
    for args in (["--runner", "FlinkRunner", "--streaming"], ["--runner", "SparkRunner"], []):
        assert with_runner_defaults(args) == args
    assert option_value(["--a", "1", "--a=2"], "--a") == "2"
    assert option_value([], "--a", "none") == "none"


# ============================================================================================
# Ports
# ============================================================================================
def test_ports_come_from_options_then_environment_then_defaults(monkeypatch):
    monkeypatch.setenv("ECPI_FLINK_REST_PORT", "18081")
    monkeypatch.setenv("ECPI_FLINK_WORKER_POOL_PORT", "0")
    ports = engines.resolve_ports("flink", {"rpc": 16123})
    assert ports["rest"] == 18081 and ports["rpc"] == 16123
    assert ports["worker-pool"] not in (0, 50000)  # 0: a free one
    monkeypatch.delenv("ECPI_FLINK_REST_PORT")
    assert engines.resolve_ports("flink")["rest"] == 8081
    assert {port.env for port in engines.PORTS["spark"]} == {
        "ECPI_SPARK_MASTER_PORT", "ECPI_SPARK_UI_PORT", "ECPI_SPARK_WORKER_UI_PORT",
        "ECPI_SPARK_WORKER_POOL_PORT"}
    monkeypatch.setenv("ECPI_SPARK_UI_PORT", "http")
    with pytest.raises(EcpiError, match="ECPI_SPARK_UI_PORT: 'http' is not a port number"):
        engines.resolve_ports("spark")


def test_a_port_in_use_is_one_line_naming_it_and_its_option(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = ecpi_engine("start", "spark", "--master-port", str(port),
                             "--ui-port", "0", "--worker-ui-port", "0",
                             "--worker-pool-port", "0", state=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{port} (--master-port)" in result.stderr and "in use" in result.stderr
    assert engines.recorded(tmp_path / "spark") == {}


# ============================================================================================
# Without a cluster
# ============================================================================================
def test_status_and_stop_with_nothing_started(tmp_path):
    assert ecpi_engine("status", state=tmp_path).stdout.splitlines() == [
        "flink: not running", "spark: not running"]
    result = ecpi_engine("stop", "spark", state=tmp_path)
    assert result.returncode == 0 and "nothing was running" in result.stdout
    result = ecpi_engine("options", "flink", state=tmp_path)
    assert result.returncode == 2 and "flink is not running" in result.stderr


def test_a_missing_distribution_is_one_line_naming_it(tmp_path):
    env = dict(os.environ, ECPI_FLINK_HOME=str(tmp_path / "nowhere"))
    result = ecpi_engine("start", "flink", "--rest-port", "0", "--rpc-port", "0",
                         "--worker-pool-port", "0", state=tmp_path / "state", env=env)
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


# ============================================================================================
# make engines (engine_setup): launcher jars, one-line errors
# ============================================================================================
def _jar(path: Path, manifest: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", manifest)
    return path


def test_the_launcher_runs_the_job_server_with_its_libraries_and_java_17_opens(tmp_path):
    artifact = engine_setup.JOB_SERVER_ARTIFACTS["spark"]
    lib = tmp_path / "lib"
    lib.mkdir()
    opens = " ".join(f"java.base/java.module{index}" for index in range(12))
    _jar(lib / f"{artifact}-{engine_setup.JOB_SERVER_VERSION}.jar",
         "Manifest-Version: 1.0\r\nMain-Class: org.apache.beam.runners.spark.Driver\r\n"
         f"Add-Opens: {opens[:60]}\r\n {opens[60:]}\r\n\r\n")
    for name in ("a-dependency-1.0.jar", "slf4j-api-2.0.16.jar", "flink-core-1.19.3.jar"):
        _jar(lib / name, "Manifest-Version: 1.0\r\n\r\n")
    launcher = engine_setup.write_launcher(tmp_path, artifact)
    with zipfile.ZipFile(launcher) as archive:
        text = archive.read("META-INF/MANIFEST.MF").decode()
    assert all(len(line.encode()) <= 72 for line in text.split("\r\n")), text
    entries = engine_setup._manifest(launcher)  # pylint: disable=protected-access
    assert entries["Main-Class"] == "org.apache.beam.runners.spark.Driver"
    assert entries["Add-Opens"] == opens
    assert entries["Class-Path"].split() == [
        f"lib/{artifact}-{engine_setup.JOB_SERVER_VERSION}.jar", "lib/a-dependency-1.0.jar",
        "lib/flink-core-1.19.3.jar", "lib/slf4j-api-2.0.16.jar"]
    engine_setup.write_cluster_lib(tmp_path)  # the cluster's class path: neither of the last
    assert sorted(p.name for p in (tmp_path / "cluster-lib").iterdir()) == [
        "a-dependency-1.0.jar", f"{artifact}-{engine_setup.JOB_SERVER_VERSION}.jar"]


def test_a_job_server_not_served_is_one_line_and_no_launcher(tmp_path, monkeypatch):
    """mvn cannot resolve the artifact (a release no repository serves): one line naming the
    artifact and the repositories, and nothing left in the cache."""
    monkeypatch.setenv(engine_setup.ENGINES_CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(engine_setup, "JOB_SERVER_VERSION", "0.0.1-not-released")
    (tmp_path / "cache").mkdir()
    empty = (tmp_path / "empty-repository").as_uri()
    with pytest.raises(EcpiError) as error:
        engine_setup.assemble_job_server("flink", [empty])
    message = str(error.value)
    assert "\n" not in message and message.startswith(
        "cannot obtain org.apache.beam:beam-runners-flink-1.19-job-server:0.0.1-not-released")
    assert empty in message and "ECPI_MAVEN_REPOSITORY" in message, message
    assert engine_setup.installed_job_server("flink") is None
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        f"beam-runners-flink-1.19-job-server-0.0.1-not-released-a{engine_setup.ASSEMBLY}.mvn.log"]


def test_make_engines_says_which_repository_is_wrong_and_is_not_ready(tmp_path):
    env = dict(os.environ, ECPI_ENGINES_CACHE=str(tmp_path / "cache"),
               ECPI_MAVEN_REPOSITORY=str(tmp_path / "no-such-folder"))
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(["bash", str(root / "engines" / "setup.sh"), sys.executable],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "ready" not in result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "no-such-folder: no such folder" in result.stderr, result.stderr
