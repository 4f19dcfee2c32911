"""Faults of the machine: read-only or full working_out, a write error mid-run, kill -9 and its
leftovers, two runs at once, a planted symbolic link, a stale failures.jsonl.

Disk faults are injected at the system-call boundary (tempfile.mkstemp, os.fsync) for files
inside working_out only, so the tests need neither root nor a small file system.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs, workdir
from fault_support import (assert_fault_outcome, assert_working_out_clean, run_in_process,
                           snapshot)
from pipeline_fixtures import ALL_PRODUCTS, ecpi_run_command, pipeline_env, write_params
from test_dpco import good_triplet, set_obs_id  # noqa: F401
from test_faults_observation import GOOD_OBS_ID, case_root  # noqa: F401

OUR_LEFTOVERS = {  # what a run killed by SIGKILL leaves behind: removed by the next run
    f".ECL-SKY-IMA_{GOOD_OBS_ID}.fits.k9x_2abc.part": b"half a product",
    f".failures.jsonl.{'0' * 32}.part": b"{",
    f".ecpi-parts/ECL-EVT-CAL_{GOOD_OBS_ID}/{'a' * 32}.rows": b"rows",
    ".ecpi-failures/imag.0123.json": b'{"obs_id": "0000000100", "stage": "imag"}',
    "failures.jsonl": b'{"obs_dir": "old", "error": "an earlier run"}\n',
}
NOT_OURS = {".notes.part": b"user", "keep.part": b"user", ".hidden": b"user",
            "ECL-SKY-IMA_other.txt.part": b"user"}


def inject_os_error(monkeypatch, where: Path, code: int, *, mkstemp=False, fsync_prefix=None):
    """Fail, with errno `code`, every temporary file created in `where` (mkstemp) or the
    flush to disk of those whose name starts with `fsync_prefix`."""
    import tempfile

    where = os.path.realpath(where)
    if mkstemp:
        original_mkstemp = tempfile.mkstemp

        def mkstemp_failing(*args, **kwargs):
            if os.path.realpath(kwargs.get("dir") or "") == where:
                raise OSError(code, os.strerror(code))
            return original_mkstemp(*args, **kwargs)
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp_failing)
    if fsync_prefix is not None:
        original_fsync = os.fsync

        def fsync_failing(descriptor):
            path = os.readlink(f"/proc/self/fd/{descriptor}")
            if os.path.dirname(path) == where and os.path.basename(path).startswith(fsync_prefix):
                raise OSError(code, os.strerror(code))
            return original_fsync(descriptor)
        monkeypatch.setattr(os, "fsync", fsync_failing)


def params_for(root, working_in, **changes):
    return write_params(root / "params.ini", working_in, root / "out", **changes)


@pytest.mark.parametrize("code, cause, how", [
    (errno.EROFS, "Read-only file system", "mkstemp"), (errno.ENOSPC, "No space left", "fsync"),
    (errno.EACCES, "Permission denied", "mkstemp")])
def test_an_unwritable_working_out_is_one_line_before_any_work(
        code, cause, how, good_triplet, case_root, pipeline_workspace, capfd, monkeypatch,  # noqa: F811
        tmp_path):
    out = case_root / "out"
    params = params_for(case_root, good_triplet)
    inject_os_error(monkeypatch, out, code, mkstemp=how == "mkstemp",
                    fsync_prefix="." if how == "fsync" else None)
    before = snapshot(tmp_path)
    code_, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert_fault_outcome(code_, stdout, stderr, [f"[general] working_out = {out}",
                                                 "cannot write there", cause])
    assert snapshot(tmp_path) == before


def test_a_write_error_mid_run_names_the_product_and_leaves_nothing(
        good_triplet, case_root, pipeline_workspace, capfd, monkeypatch, tmp_path):  # noqa: F811
    out = case_root / "out"
    params = params_for(case_root, good_triplet)
    inject_os_error(monkeypatch, out, errno.ENOSPC, fsync_prefix=".ECL-SKY-IMA_")
    before = snapshot(tmp_path, skip=out)
    code, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert_fault_outcome(code, stdout, stderr, [
        f"observation {GOOD_OBS_ID}: write failed", str(out / f"ECL-SKY-IMA_{GOOD_OBS_ID}.fits"),
        "No space left on device"])
    assert snapshot(tmp_path, skip=out) == before
    assert_working_out_clean(out)
    # the observation failed: none of its products stays, only the failure record
    assert sorted(os.listdir(out)) == ["failures.jsonl"]
    assert "0/1 observation(s) processed" in stdout
    assert "; products 0; sources 0 (0 new);" in stdout  # what was made, not what was written


def plant(out: Path, files: dict):
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)


def dead_process_id() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def kill_while_running(params, workspace, out: Path):
    """Start ecpi_run, SIGKILL it once it holds the lock (and, if it gets there, has parts)."""
    process = subprocess.Popen([*ecpi_run_command("script"), str(params)],
                               env=pipeline_env(workspace), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (out / workdir.LOCK_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    parts_deadline = time.monotonic() + 8
    while not (out / ".ecpi-parts").exists() and time.monotonic() < parts_deadline \
            and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "ecpi_run ended before it could be killed"


def test_a_rerun_after_kill_9_removes_our_leftovers_only(
        good_triplet, case_root, pipeline_workspace, capfd, monkeypatch, tmp_path):  # noqa: F811
    out = case_root / "out"
    params = params_for(case_root, good_triplet)
    kill_while_running(params, pipeline_workspace, out)
    assert (out / workdir.LOCK_NAME).exists()  # the killed run's lock: stale now
    (out / workdir.LOCK_NAME).write_text(json.dumps(
        {"pid": dead_process_id(), "host": "here", "started": "2026-01-01T00:00:00+00:00"}))
    plant(out, OUR_LEFTOVERS)
    plant(out, NOT_OURS)
    before = snapshot(tmp_path, skip=out)
    code, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert code == 0 and stderr.strip() == "", stderr
    assert snapshot(tmp_path, skip=out) == before
    assert sorted(os.listdir(out)) == sorted(
        [f"{name}_{GOOD_OBS_ID}.fits" for name in ALL_PRODUCTS] + list(NOT_OURS)
        + [f"ECL-SOP-IMA_{GOOD_OBS_ID}.reg"])  # DS9 regions beside it
    for name, data in NOT_OURS.items():
        assert (out / name).read_bytes() == data


def test_a_second_run_on_the_same_working_out_is_refused(
        good_triplet, case_root, pipeline_workspace, capfd, monkeypatch, tmp_path):  # noqa: F811
    out = case_root / "out"
    params = params_for(case_root, good_triplet)
    with workdir.RunLock(str(out)):
        before = snapshot(tmp_path)
        code, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
        assert snapshot(tmp_path) == before
    assert_fault_outcome(code, stdout, stderr, [
        f"[general] working_out = {out} is in use by another ecpi_run",
        f"process {os.getpid()}", workdir.LOCK_NAME])
    assert os.listdir(out) == []  # the first run's lock went with it


def test_locks_on_an_object_store_refuse_a_live_holder_and_reclaim_a_dead_one():
    root = "memory://ecpi-lock-test/out"
    fs.makedirs(root)
    with workdir.RunLock(root):
        with pytest.raises(EcpiError, match="is in use by another ecpi_run"):
            workdir.RunLock(root).__enter__()
    assert not fs.exists(fs.join(root, workdir.LOCK_NAME))
    import socket

    fs.put_atomic(json.dumps({"pid": dead_process_id(), "host": socket.gethostname(),
                              "started": "then"}).encode(), fs.join(root, workdir.LOCK_NAME))
    with workdir.RunLock(root):
        record = json.loads(fs.read_bytes(fs.join(root, workdir.LOCK_NAME)))
        assert record["pid"] == os.getpid()


def test_a_stale_failures_file_goes_even_when_preflight_fails(
        good_triplet, case_root, pipeline_workspace, capfd, monkeypatch, tmp_path):  # noqa: F811
    from test_dpco import make_bad

    out = case_root / "out"
    (out / "failures.jsonl").write_text('{"obs_dir": "old", "error": "an earlier run"}\n')
    broken = make_bad(good_triplet, str(case_root / "in"), "hostile", "x",
                      lambda d: set_obs_id(d, "../../escape"))
    code, stdout, stderr = run_in_process(params_for(case_root, broken), pipeline_workspace,
                                          capfd, monkeypatch)
    assert_fault_outcome(code, stdout, stderr, ["OBS_ID = '../../escape'"])
    assert os.listdir(out) == []


@pytest.mark.parametrize("link", [".ecpi-parts", ".ecpi-failures", "failures.jsonl",
                                  workdir.LOCK_NAME])
def test_a_link_planted_in_working_out_leads_nothing_out(
        link, good_triplet, case_root, pipeline_workspace, capfd, monkeypatch, tmp_path):  # noqa: F811
    out = case_root / "out"
    target = case_root / "sibling" / ("victim.txt" if "." in link[1:] else "")
    (out / link).symlink_to(target)
    params = params_for(case_root, good_triplet)
    before = snapshot(tmp_path, skip=out)
    code, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert_fault_outcome(code, stdout, stderr, [str(out), link])
    assert snapshot(tmp_path, skip=out) == before
    assert "outside working_out" in stderr or "cannot create the lock" in stderr
    assert "ecpi_run:" not in stdout  # refused before any work
