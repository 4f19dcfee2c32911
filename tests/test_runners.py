"""The same small observation on every runner we claim, and on a bucket (docs/runners.md).

Each run is `ecpi_run params.ini <beam options>` in a subprocess; its products are compared
with the DirectRunner reference run (pipeline_fixtures.reference_run): the same detector
counts, the same sources. Services (Beam's job service, a Dask scheduler and workers, the moto
S3 server) are started as subprocesses in their own process group and stopped by process id.
"""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

# pipeline_workspace, reference_run, small_observation are fixtures
from pipeline_fixtures import (
    DEFAULT_BANDS, describe, detector_counts, nearest_source, pipeline_env, run_ecpi,
    sources_table, write_params)

SERVICE_STARTUP_S = 60.0
RUNNER_PRODUCTS = dict(cali_out=[], bube_out=["ECL-DET-IMA"], imag_out=["ECL-SOP-IMA"])
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


# ============================================================================================
# Services: started in their own process group, stopped by process id
# ============================================================================================
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(command, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "wb")
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        log.close()


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group led by `process` (and only it), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def _wait_for_port(port: int, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVICE_STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"service exited with code {process.returncode}:\n"
                        f"{log_path.read_text(errors='replace')[-3000:]}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"nothing listens on port {port} after {SERVICE_STARTUP_S} s:\n"
                f"{log_path.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def job_service(tmp_path_factory):
    """Beam's portable job service (the Job API of the Flink and Spark job servers)."""
    logs = tmp_path_factory.mktemp("job_service")
    port = _free_port()
    process = _start([sys.executable, "-m",
                      "apache_beam.runners.portability.local_job_service_main",
                      "--port", str(port)], logs / "job_service.log")
    try:
        _wait_for_port(port, process, logs / "job_service.log")
        yield f"localhost:{port}"
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A Dask scheduler and two single-threaded workers on 127.0.0.1, no dashboard."""
    logs = tmp_path_factory.mktemp("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes = [_start([sys.executable, "-m", "distributed.cli.dask_scheduler",
                         "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                        logs / "scheduler.log")]
    try:
        _wait_for_port(port, processes[0], logs / "scheduler.log")
        for index in range(2):
            processes.append(_start([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                     "--nworkers", "1", "--nthreads", "1", "--no-nanny",
                                     "--no-dashboard",
                                     "--host", "127.0.0.1"], logs / f"worker{index}.log"))
        from distributed import Client

        with Client(address, timeout=SERVICE_STARTUP_S) as client:
            client.wait_for_workers(2, timeout=SERVICE_STARTUP_S)
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)


# ============================================================================================
# Comparison with the DirectRunner reference
# ============================================================================================
def assert_same_as_reference(result, reference, obs_id, out_dir=None):
    """Same ECL-DET-IMA counts (exactly) and the same ECL-SOP-IMA sources as the reference."""
    out_dir = Path(out_dir or result.working_out)
    ours = detector_counts(out_dir / f"ECL-DET-IMA_{obs_id}.fits")
    theirs = detector_counts(reference.product("ECL-DET-IMA", obs_id))
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)

    found = sources_table(out_dir / f"ECL-SOP-IMA_{obs_id}.fits")
    expected = sources_table(reference.product("ECL-SOP-IMA", obs_id))
    assert len(found) == len(expected), (found, expected)
    for row in expected:
        match = nearest_source(found, row["RA"], row["DEC"], band=row["BAND"])
        assert match is not None and match[0] < 0.05, (row, match)
        assert match[1]["OCC_TYPE"] == row["OCC_TYPE"]
        assert np.isclose(match[1]["SNR"], row["SNR"], rtol=1e-3), (row, match[1])


def _run_on(runner_args, tmp_path, workspace, observation, env=None):
    out = tmp_path / "out"
    out.mkdir()
    params = write_params(tmp_path / "params.ini", observation.directory, out, **RUNNER_PRODUCTS)
    result = run_ecpi(params, *runner_args, workspace=workspace, working_out=out, env=env)
    assert result.returncode == 0, describe(result)
    assert "1/1 observation(s) processed" in result.stdout, describe(result)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("ECL-ALERT_")) == [
        f"ECL-DET-IMA_{observation.obs_id}.fits", f"ECL-SOP-IMA_{observation.obs_id}.fits",
        f"ECL-SOP-IMA_{observation.obs_id}.reg"]
    return result


# ============================================================================================
# Runners
# ============================================================================================
def test_direct_runner_multi_processing(tmp_path, pipeline_workspace, small_observation,
                                        reference_run):
    result = _run_on(["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
                     tmp_path, pipeline_workspace, small_observation)
    assert_same_as_reference(result, reference_run, small_observation.obs_id)


def test_portable_job_service_loopback(tmp_path, pipeline_workspace, small_observation,
                                       reference_run, job_service):
    result = _run_on(["--runner", "PortableRunner", "--job_endpoint", job_service,
                      "--environment_type", "LOOPBACK"],
                     tmp_path, pipeline_workspace, small_observation)
    assert_same_as_reference(result, reference_run, small_observation.obs_id)


def summary_counts(stdout: str) -> dict:
    """The numbers of ecpi_run's summary line: events read, products, sources, new."""
    import re

    line = next(line for line in stdout.splitlines() if line.startswith("ecpi_run: "))
    match = re.search(r"events read (\d+), .*; products (\d+); sources (\d+) \((\d+) new\)",
                      line)
    assert match, line
    return dict(zip(("events", "products", "sources", "new"), map(int, match.groups())))


def test_dask_distributed(tmp_path, pipeline_workspace, small_observation, reference_run,
                          dask_cluster):
    result = _run_on(["--runner", DASK_RUNNER, "--dask_client_address", dask_cluster],
                     tmp_path, pipeline_workspace, small_observation)
    assert_same_as_reference(result, reference_run, small_observation.obs_id)
    # the DaskRunner reports no metrics: the line counts what was written (was all zeros)
    counts = summary_counts(result.stdout)
    reference = summary_counts(reference_run.stdout)
    with fits.open(result.working_out / f"ECL-SOP-IMA_{small_observation.obs_id}.fits") as hdul:
        catalogue = hdul["CATALOG"].data
    assert counts == {"events": reference["events"], "products": 2,
                      "sources": len(catalogue), "new": int(catalogue["NEW"].sum())}, \
        result.stdout
    assert counts["events"] > 0 and counts["sources"] > 0
    assert "calibrated not counted (no metrics from this runner)" in result.stdout


# ============================================================================================
# A bucket (moto S3 server) for input and output; the CALDB stays local
# ============================================================================================
def test_s3_input_and_output(tmp_path, pipeline_workspace, small_observation, reference_run,
                             s3_bucket, s3_endpoint, fitsverify):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = s3_bucket.removeprefix("s3://")
    for path in sorted(small_observation.directory.iterdir()):
        client.upload_file(str(path), bucket, f"obs/{path.name}")
    out = tmp_path / "out"
    params = write_params(tmp_path / "params.ini", f"{s3_bucket}/obs/", f"{s3_bucket}/out/",
                          cali_out=["ECL-GTI-CAL"], bube_out=["ECL-DET-IMA"],
                          imag_out=["ECL-SKY-IMA", "ECL-SOP-IMA"])
    # ECPI_STORAGE_OPTIONS (set by s3_bucket) reaches the pipeline through the environment.
    env = pipeline_env(pipeline_workspace)
    assert "ECPI_STORAGE_OPTIONS" in env
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=out, env=env)
    assert result.returncode == 0, describe(result)
    assert "1/1 observation(s) processed" in result.stdout, describe(result)

    obs_id = small_observation.obs_id
    keys = sorted(item["Key"] for item in
                  client.list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents", []))
    alerts = [key for key in keys if Path(key).name.startswith("ECL-ALERT_")]
    assert len(alerts) == 1, keys  # the simulated source is not catalogued: its VOEvent on S3
    keys = [key for key in keys if key not in alerts]
    assert keys == sorted([f"out/{name}_{obs_id}.fits" for name in
                           ("ECL-GTI-CAL", "ECL-DET-IMA", "ECL-SKY-IMA", "ECL-SOP-IMA")]
                          + [f"out/ECL-SOP-IMA_{obs_id}.reg"]), keys  # its DS9 regions
    out.mkdir()
    for key in (key for key in keys if key.endswith(".fits")):
        local = out / Path(key).name
        client.download_file(bucket, key, str(local))
        fitsverify(local)
        assert fits.getval(local, "OBS_ID") == obs_id
    assert_same_as_reference(result, reference_run, obs_id, out_dir=out)
    source = small_observation.source
    band = f"{DEFAULT_BANDS[0][0]}-{DEFAULT_BANDS[0][1]}"
    offset, _ = nearest_source(sources_table(out / f"ECL-SOP-IMA_{obs_id}.fits"),
                               source["ra"], source["dec"], band=band)
    assert offset < 5.0
