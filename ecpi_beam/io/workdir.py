"""The run's hold on working_out: writability, a lock, and removing what earlier runs left.

Everything here writes or deletes only names built by `fs.inside`, so only inside working_out,
and only files of ours: the lock, the write probe, the atomic writer's temporaries
('.<name>.<random>.part'), the folders the pipeline names, and products
'<PRODUCT>_<OBS_ID>.<ext>' of one observation (docs/reliability.md).
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import socket

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs
from ecpi_beam.io.failures import FAILURES_FILE

LOCK_NAME = ".ecpi-run.lock"
PROBE_NAME = ".ecpi-write-probe"
# fs.atomic_write's temporaries of our files: '.<name>.<8 mkstemp characters>.part' locally,
# '.<name>.<32 hex>.part' on object stores; <name> a product or failures.jsonl
OUR_TEMPORARY = re.compile(r"\.(ECL-[A-Za-z0-9_.-]+|" + re.escape(FAILURES_FILE)
                           + r")\.([A-Za-z0-9_]{8}|[0-9a-f]{32})\.part")
# '<PRODUCT>_<obs_id>.<ext>', SPEX's '<PRODUCT>_<obs_id>_S<k>_...' and the alerts'
# 'ECL-ALERT_<obs_id>_J<position>_<sequence>.xml' (docs/products.md)
PRODUCT_NAME = re.compile(r"(?P<product>ECL-[A-Z0-9]{3}-[A-Z0-9]{2,3}|ECL-ALERT)_(?P<rest>[A-Za-z0-9_.-]+)")


def check_writable(working_out: str) -> None:
    """Write and remove a small probe file: a read-only or full working_out is one line here,
    before any work, not a traceback mid-run."""
    probe = fs.inside(working_out, f"{PROBE_NAME}.{os.getpid()}")
    try:
        fs.put_atomic(b"ecpi_run write probe\n", probe)
    except EcpiError as err:
        cause = str(err).split(": cannot write it ", 1)[-1]
        raise EcpiError(f"[general] working_out = {working_out}: cannot write there "
                        f"{cause}") from None
    fs.remove(probe)


# ============================================================================================
# The lock: one run per working_out
# ============================================================================================
def _lock_record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _holder(text) -> str:
    try:
        record = json.loads(text)
        return f"process {record['pid']} on {record['host']}, started {record['started']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown process"


def _in_use_error(working_out: str, lock_url: str, holder: str) -> EcpiError:
    return EcpiError(f"[general] working_out = {working_out} is in use by another ecpi_run "
                     f"({holder}; lock file {fs.basename(lock_url)}): wait for it to end or "
                     "choose another working_out")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class RunLock:
    """`with RunLock(working_out):` the lock file '.ecpi-run.lock' (JSON: pid, host, start).

    Local: the file is held with flock, which the kernel releases when the process dies (even
    by kill -9), so a stale file is reclaimed at once. Object stores have no locks: the file is
    reclaimed when its process, on this host, is gone; held by another host it is refused
    (remove it by hand once that run is known to be over).
    """

    def __init__(self, working_out: str):
        self.working_out = working_out
        self.url = fs.inside(working_out, LOCK_NAME)
        self._descriptor = None

    def __enter__(self):
        if fs.is_local(self.url):
            self._lock_local()
        else:
            self._lock_remote()
        return self

    def _lock_local(self):
        import fcntl

        _, path = fs.filesystem(self.url)
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise EcpiError(f"[general] working_out = {self.working_out}: cannot create the "
                            f"lock file {LOCK_NAME} ({fs.describe_os_error(err)})") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _holder(os.pread(descriptor, 4096, 0).decode(errors="replace"))
            os.close(descriptor)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _in_use_error(self.working_out, self.url, holder) from None
            raise EcpiError(f"[general] working_out = {self.working_out}: cannot lock "
                            f"{LOCK_NAME} ({fs.describe_os_error(err)})") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(_lock_record()).encode(), 0)
        self._descriptor = descriptor

    def _lock_remote(self):
        if fs.exists(self.url):
            text = fs.read_bytes(self.url).decode(errors="replace")
            try:
                record = json.loads(text)
                stale = (record.get("host") == socket.gethostname()
                         and not _process_alive(int(record.get("pid"))))
            except (ValueError, TypeError, AttributeError):
                stale = False
            if not stale:
                raise _in_use_error(self.working_out, self.url, _holder(text))
        fs.put_atomic(json.dumps(_lock_record()).encode(), self.url)

    def __exit__(self, *exc):
        if self._descriptor is not None:
            _, path = fs.filesystem(self.url)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # while still held: the next run creates a fresh one
            os.close(self._descriptor)
            self._descriptor = None
        else:
            fs.remove(self.url)
        return False


# ============================================================================================
# What earlier runs left
# ============================================================================================
def remove_leftovers(working_out: str, folders=(), files=()) -> list[str]:
    """Remove our temporaries at the top of working_out, the named folders (recursively) and
    the named files; returns the names removed. Call it with the lock held only."""
    removed = []
    for name in _names(working_out):
        if OUR_TEMPORARY.fullmatch(name) or name.startswith(PROBE_NAME + "."):
            fs.remove(fs.inside(working_out, name))
            removed.append(name)
    for name in (*folders, *files):
        url = fs.inside(working_out, name)
        if fs.exists(url):
            fs.remove(url, recursive=name in folders)
            removed.append(name)
    return removed


def _names(working_out: str) -> list[str]:
    """Entries of working_out; none for a bucket prefix that holds no key yet."""
    try:
        return fs.listdir(working_out)
    except FileNotFoundError:
        return []


def products_of(working_out: str, obs_id: str) -> list[str]:
    """URLs of the files of observation `obs_id` in working_out (PRODUCT_NAME)."""
    return products_by_observation(working_out, [obs_id])[obs_id]


def products_by_observation(working_out: str, obs_ids) -> dict[str, list[str]]:
    """obs_id -> URLs of its files in working_out, for many observations with one listing."""
    found = {obs_id: [] for obs_id in obs_ids}
    own = {obs_id: re.compile(re.escape(obs_id)
                              + r"(\.[A-Za-z0-9.]+|_S\d+_[A-Za-z0-9_.-]+|_J\d[A-Za-z0-9_.]+)")
           for obs_id in found}
    for name in _names(working_out):
        match = PRODUCT_NAME.fullmatch(name)
        if not match:
            continue
        for obs_id, pattern in own.items():
            if pattern.fullmatch(match.group("rest")):
                with contextlib.suppress(EcpiError):  # a link leading out is not ours
                    found[obs_id].append(fs.inside(working_out, name))
    return found


def product_name(url: str) -> str:
    """'.../ECL-SPS-S1_<OBS_ID>_S01_PEO.arf' -> 'ECL-SPS-S1'."""
    return fs.basename(url).split("_", 1)[0]


def remove_products_of(working_out: str, obs_ids) -> list[str]:
    """Remove every product of the given observations (failed ones get none); returns URLs."""
    removed = []
    for obs_id in sorted(set(obs_ids)):
        for url in products_of(working_out, obs_id):
            fs.remove(url)
            removed.append(url)
    return removed
