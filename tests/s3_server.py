"""A real S3-compatible server (moto) for tests that read and write s3:// URLs.

`s3_endpoint` (session) starts `python -m moto.server` on a free local port and stops it by
process id at the end; `s3_bucket` (per test) points ECPI_STORAGE_OPTIONS and the AWS
variables at it and yields a fresh, empty bucket URL such as 's3://ecpi-test-3f2a...'.
"""
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

STARTUP_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(endpoint: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(endpoint, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer at {endpoint} in {STARTUP_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def s3_endpoint():
    """URL of a moto S3 server running for the whole test session."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port),
                                "-H", "127.0.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(endpoint, process)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    """A new empty bucket on the test server; yields its URL 's3://<name>'."""
    import boto3

    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"}
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("ECPI_STORAGE_OPTIONS", json.dumps(
        {"s3": {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}}))
    bucket = f"ecpi-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing"
                 ).create_bucket(Bucket=bucket)
    yield f"s3://{bucket}"
