"""The fsspec layer: local, memory:// and a real S3-compatible server (moto)."""
import dataclasses
import errno
import importlib.util
import json
import os

import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import register_implementation

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import events, fs
from test_io_events import write_event_file

TRIPLET = ("ECL-EVT-SEC_obs.fits", "SVO-ATT-CNV_obs.fits", "SVO-ORB-CNV_obs.fits")


@pytest.fixture
def no_retry_delay(monkeypatch):
    monkeypatch.setattr(fs, "RETRY_BASE_DELAY_S", 0.0)


def make_campaign(root: str, n_observations=2) -> list[str]:
    """Observation directories obs0, obs1... each holding a (dummy) triplet."""
    directories = []
    for index in range(n_observations):
        directory = fs.join(root, f"obs{index}")
        for name in TRIPLET:
            fs.put_atomic(b"dummy", fs.join(directory, name))
        directories.append(directory)
    return directories


# ============================================================================================
# Paths, listing, globbing
# ============================================================================================
def test_local_paths_stay_plain(tmp_path):
    make_campaign(str(tmp_path))
    pattern = str(tmp_path / "obs*")
    assert fs.glob(pattern) == [str(tmp_path / "obs0"), str(tmp_path / "obs1")]
    assert fs.listdir(str(tmp_path / "obs0")) == sorted(TRIPLET)
    assert fs.isdir(str(tmp_path / "obs0")) and not fs.isdir(str(tmp_path / "none"))
    assert fs.exists(fs.join(str(tmp_path / "obs1"), TRIPLET[0]))


def test_memory_urls_keep_their_protocol():
    root = "memory://fs-test-glob"
    make_campaign(root)
    assert fs.glob(root + "/obs*") == [root + "/obs0", root + "/obs1"]
    assert fs.glob(root + "/obs1/SVO-*") == [root + "/obs1/" + TRIPLET[1],
                                             root + "/obs1/" + TRIPLET[2]]
    assert fs.listdir(root) == ["obs0", "obs1"]
    assert fs.isdir(root + "/obs0") and fs.exists(root + "/obs0/" + TRIPLET[0])


def test_join_basename_parent():
    assert fs.join("s3://bucket/out/", "ECL-SKY-IMA_1.fits") == "s3://bucket/out/ECL-SKY-IMA_1.fits"
    assert fs.join("out", "a.fits") == os.path.join("out", "a.fits")
    assert fs.basename("s3://bucket/out/a.fits") == "a.fits"
    assert fs.parent("s3://bucket/out/a.fits") == "s3://bucket/out"


def test_find_observation_dirs_and_triplets(tmp_path):
    directories = make_campaign(str(tmp_path / "campaign"), 3)
    (tmp_path / "campaign" / "notes").mkdir()  # matched by the glob, holds no events: skipped
    found = fs.find_observation_dirs((str(tmp_path / "campaign" / "*"),))
    assert found == directories
    assert fs.find_observation_dirs((directories[1], directories[0], directories[1])) == \
        directories[:2]
    triplet = fs.find_triplet(directories[0])
    assert triplet == {"ECL-EVT-SEC": fs.join(directories[0], TRIPLET[0]),
                       "SVO-ATT-CNV": fs.join(directories[0], TRIPLET[1]),
                       "SVO-ORB-CNV": fs.join(directories[0], TRIPLET[2])}


def test_discovery_errors_name_the_location(tmp_path):
    with pytest.raises(EcpiError, match=r"working_in = .*nowhere: no such directory"):
        fs.find_observation_dirs((str(tmp_path / "nowhere"),))
    with pytest.raises(EcpiError, match=r"working_in = .*obs\*: no directory matching it"):
        fs.find_observation_dirs((str(tmp_path / "obs*"),))
    directory = make_campaign(str(tmp_path))[0]
    fs.put_atomic(b"x", fs.join(directory, "SVO-ATT-CNV_second.fits.gz"))
    with pytest.raises(EcpiError, match=r"expected exactly one SVO-ATT-CNV\*\.fits\[\.gz\] file, "
                                        r"found SVO-ATT-CNV_obs\.fits, SVO-ATT-CNV_second"):
        fs.find_triplet(directory)
    os.remove(fs.join(directory, TRIPLET[2]))
    fs.remove(fs.join(directory, "SVO-ATT-CNV_second.fits.gz"))
    with pytest.raises(EcpiError, match=r"SVO-ORB-CNV\*\.fits\[\.gz\] file, found none"):
        fs.find_triplet(directory)


# ============================================================================================
# Atomic writes
# ============================================================================================
def assert_failed_write_leaves_the_old_file(root, name):
    """A write interrupted half-way leaves the previous content and no temporary behind."""
    target = fs.join(root, name)
    fs.put_atomic(b"version 1", target)
    with pytest.raises(RuntimeError):
        with fs.atomic_write(target) as stream:
            stream.write(b"half of version 2")
            raise RuntimeError("disk on fire")
    assert fs.read_bytes(target) == b"version 1"
    assert fs.listdir(root) == [name]
    return target


@pytest.mark.parametrize("root_kind", ["local", "memory"])
def test_atomic_write_is_all_or_nothing(tmp_path, root_kind):
    root = str(tmp_path) if root_kind == "local" else f"memory://fs-atomic-{tmp_path.name}"
    target = assert_failed_write_leaves_the_old_file(root, "product.fits")
    fs.put_atomic(b"version 2", target)
    assert fs.read_bytes(target) == b"version 2"
    assert fs.listdir(root) == ["product.fits"]


def test_put_atomic_copies_a_local_file(tmp_path):
    source = tmp_path / "local.bin"
    source.write_bytes(b"\x00\x01" * 1000)
    url = fs.put_atomic(str(source), "memory://fs-put/copy.bin")
    assert fs.read_bytes(url) == source.read_bytes()
    fs.remove(url)
    assert not fs.exists(url)
    fs.remove(url)  # missing is fine by default
    with pytest.raises(FileNotFoundError):
        fs.remove(url, missing_ok=False)


# ============================================================================================
# Storage options and protocols
# ============================================================================================
def test_storage_options_from_environment(tmp_path, monkeypatch):
    config = tmp_path / "storage.json"
    config.write_text(json.dumps({"s3": {"endpoint_url": "http://file", "anon": True}}))
    monkeypatch.setenv(fs.STORAGE_CONFIG_ENV, str(config))
    monkeypatch.setenv(fs.STORAGE_OPTIONS_ENV, json.dumps({"s3": {"endpoint_url": "http://env"}}))
    assert fs.storage_options("s3") == {"endpoint_url": "http://env", "anon": True}
    assert fs.storage_options("gs") == {}


@pytest.mark.parametrize("value, message", [
    ("{not json", "ECPI_STORAGE_OPTIONS: not valid JSON"),
    ('{"s3": 5}', "ECPI_STORAGE_OPTIONS: expected a JSON object of options per protocol"),
])
def test_bad_storage_options_are_one_line(monkeypatch, value, message):
    monkeypatch.setenv(fs.STORAGE_OPTIONS_ENV, value)
    with pytest.raises(EcpiError, match=message):
        fs.filesystem("s3://bucket/key")


def test_unreadable_storage_config(monkeypatch, tmp_path):
    monkeypatch.setenv(fs.STORAGE_CONFIG_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(EcpiError, match="ECPI_STORAGE_CONFIG=.*missing.json: cannot read it"):
        fs.storage_options("s3")


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_missing_backend_names_the_package():
    with pytest.raises(EcpiError, match=r"gs://bucket/x: the 'gs://' protocol needs the Python "
                                        r"package 'gcsfs'"):
        fs.exists("gs://bucket/x")


def test_unknown_protocol():
    with pytest.raises(EcpiError, match=r"unknown protocol 'nosuch://'"):
        fs.filesystem("nosuch://x/y")


# ============================================================================================
# Retries
# ============================================================================================
class FlakyFileSystem(MemoryFileSystem):
    """memory:// whose reads fail with a network error the first `failures` times."""

    protocol = "flaky"
    store: dict = {}
    pseudo_dirs = [""]
    failures = 0
    error: Exception = ConnectionError("connection reset by peer")
    calls = 0

    def cat_file(self, path, start=None, end=None, **kwargs):
        type(self).calls += 1
        if type(self).calls <= type(self).failures:
            raise type(self).error
        return super().cat_file(path, start=start, end=end, **kwargs)


@pytest.fixture
def flaky(no_retry_delay):
    register_implementation("flaky", FlakyFileSystem, clobber=True)
    FlakyFileSystem.calls = 0
    fs.put_atomic(b"0123456789", "flaky://data/file.bin")
    yield FlakyFileSystem
    FlakyFileSystem.store.clear()


def test_transient_errors_are_retried(flaky):
    flaky.failures, flaky.calls = 2, 0
    assert fs.read_range("flaky://data/file.bin", 2, 3) == b"234"
    assert flaky.calls == 3


def test_retries_are_bounded(flaky):
    flaky.failures, flaky.calls = 10, 0
    with pytest.raises(ConnectionError):
        fs.read_bytes("flaky://data/file.bin")
    assert flaky.calls == fs.RETRY_ATTEMPTS


def test_missing_file_is_not_retried(flaky, monkeypatch):
    monkeypatch.setattr(flaky, "error", FileNotFoundError("flaky://data/none"))
    flaky.failures, flaky.calls = 10, 0
    with pytest.raises(FileNotFoundError):
        fs.read_bytes("flaky://data/file.bin")
    assert flaky.calls == 1


def test_retry_backs_off_exponentially(monkeypatch):
    sleeps = []
    monkeypatch.setattr(fs.time, "sleep", sleeps.append)
    attempts = iter([TimeoutError(), OSError(errno.ECONNRESET, "reset"), TimeoutError(), "done"])

    def unreliable():
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert fs.retry(unreliable) == "done"
    base = fs.RETRY_BASE_DELAY_S
    assert sleeps == [base, 2 * base, 4 * base]


@pytest.mark.parametrize("error, transient", [
    (ConnectionError(), True), (TimeoutError(), True),
    (OSError(errno.ETIMEDOUT, "timed out"), True), (OSError(errno.ENOSPC, "full"), False),
    (FileNotFoundError(), False), (PermissionError(), False), (ValueError(), False),
    (type("EndpointConnectionError", (Exception,), {})(), True),
])
def test_which_errors_are_transient(error, transient):
    assert fs.is_transient(error) is transient


# ============================================================================================
# A real S3-compatible server
# ============================================================================================
def test_s3_event_rows_equal_local_read(s3_bucket, tmp_path):
    local = write_event_file(str(tmp_path / "ECL-EVT-SEC_obs.fits"))
    remote = fs.put_atomic(local, f"{s3_bucket}/campaign/obs0/ECL-EVT-SEC_obs.fits")
    layout = events.table_layout(remote)
    assert layout == dataclasses.replace(events.table_layout(local), url=remote)
    np.testing.assert_array_equal(events.read_rows(remote, 1000, 700, layout),
                                  events.read_rows(local, 1000, 700))
    assert events.read_primary_header(remote)["OBS_ID"] == "0123456789"


def test_s3_atomic_write_glob_and_triplets(s3_bucket):
    directories = make_campaign(f"{s3_bucket}/campaign", 2)
    assert fs.glob(f"{s3_bucket}/campaign/obs*") == directories
    assert fs.find_observation_dirs((f"{s3_bucket}/campaign/obs*",)) == directories
    assert fs.find_triplet(directories[1])["SVO-ORB-CNV"] == directories[1] + "/" + TRIPLET[2]
    assert_failed_write_leaves_the_old_file(f"{s3_bucket}/out", "ECL-GTI-CAL_0.fits")
    assert fs.output_location_exists(f"{s3_bucket}/not-yet-a-prefix")
    assert not fs.output_location_exists("s3://no-such-bucket-ecpi/out")
