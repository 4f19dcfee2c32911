"""Every file access of the package goes through here: the only module that imports fsspec.

Locations are plain local paths or fsspec URLs (file://, memory://, s3://, gs://, ...).
Storage options (endpoints, credentials) come from the environment, see docs/io.md:
- the backends' own variables (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, FSSPEC_S3_*, ...);
- ECPI_STORAGE_CONFIG: path of a JSON file {"<protocol>": {<options>}, ...};
- ECPI_STORAGE_OPTIONS: the same JSON inline; it wins over the file.
Network operations are retried with exponential backoff on transient errors only.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import posixpath
import tempfile
import time
import uuid

import fsspec
from fsspec.registry import known_implementations

from ecpi_beam.errors import EcpiError

RETRY_ATTEMPTS = 4
RETRY_BASE_DELAY_S = 0.25  # then 0.5, 1.0: about 2 s in all before giving up
STORAGE_OPTIONS_ENV = "ECPI_STORAGE_OPTIONS"
STORAGE_CONFIG_ENV = "ECPI_STORAGE_CONFIG"
LOCAL_PROTOCOLS = ("file", "local")
GLOB_CHARACTERS = "*?["
TRIPLET_PATTERNS = {"ECL-EVT-SEC": "ECL-EVT-SEC*.fits", "SVO-ATT-CNV": "SVO-ATT-CNV*.fits",
                    "SVO-ORB-CNV": "SVO-ORB-CNV*.fits"}  # ICD section 2; each may end in .gz

_TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT,
                     errno.EAGAIN, errno.EPIPE, errno.ENETUNREACH, errno.EHOSTUNREACH,
                     errno.ENETDOWN, errno.EBUSY}
# Network errors of botocore/aiohttp, matched by class name so neither package is required.
_TRANSIENT_CLASS_NAMES = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                          "ConnectionClosedError", "ServerDisconnectedError",
                          "ClientConnectionError", "ClientOSError", "ClientPayloadError",
                          "ResponseStreamingError", "IncompleteReadError"}


# ============================================================================================
# Retries
# ============================================================================================
def is_transient(error: BaseException) -> bool:
    """True for errors worth retrying: network trouble, never a missing or forbidden file."""
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError,
                          NotADirectoryError, FileExistsError)):
        return False
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if any(cls.__name__ in _TRANSIENT_CLASS_NAMES for cls in type(error).__mro__):
        return True
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS


def retry(function, *args, attempts: int | None = None, **kwargs):
    """Call function(*args, **kwargs), retrying transient errors with exponential backoff."""
    attempts = attempts or RETRY_ATTEMPTS
    for attempt in range(attempts):
        try:
            return function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - filtered just below
            if attempt == attempts - 1 or not is_transient(error):
                raise
            time.sleep(RETRY_BASE_DELAY_S * 2**attempt)
    raise AssertionError("unreachable")


def _retried(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return retry(function, *args, **kwargs)
    return wrapper


# ============================================================================================
# File systems
# ============================================================================================
def protocol_of(url: str) -> str:
    """'s3' for s3://bucket/key, 'file' for plain paths."""
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def is_local(url: str) -> bool:
    return protocol_of(url) in LOCAL_PROTOCOLS


def storage_options(protocol: str) -> dict:
    """Options for one protocol, from ECPI_STORAGE_CONFIG (file) then ECPI_STORAGE_OPTIONS."""
    options: dict = {}
    config_path = os.environ.get(STORAGE_CONFIG_ENV)
    if config_path:
        try:
            with open(config_path, encoding="utf-8") as stream:
                text = stream.read()
        except OSError as err:
            raise EcpiError(f"{STORAGE_CONFIG_ENV}={config_path}: cannot read it "
                            f"({err.strerror})") from None
        options.update(_options_from_json(text, f"{STORAGE_CONFIG_ENV} file {config_path}",
                                          protocol))
    inline = os.environ.get(STORAGE_OPTIONS_ENV)
    if inline:
        options.update(_options_from_json(inline, STORAGE_OPTIONS_ENV, protocol))
    return options


def _options_from_json(text: str, where: str, protocol: str) -> dict:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise EcpiError(f"{where}: not valid JSON ({err.msg} at line {err.lineno}); expected "
                        '{"s3": {"endpoint_url": "http://127.0.0.1:9000"}}') from None
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        raise EcpiError(f"{where}: expected a JSON object of options per protocol, like "
                        '{"s3": {"endpoint_url": "http://127.0.0.1:9000"}}')
    return dict(config.get(protocol, {}))


def filesystem(url: str):
    """(fsspec filesystem, path inside it) for a URL or a local path."""
    protocol = protocol_of(url)
    try:
        return fsspec.core.url_to_fs(url, **storage_options(protocol))
    except ImportError:
        hint = known_implementations.get(protocol, {}).get("err", "")
        package = known_implementations.get(protocol, {}).get("class", "?").split(".")[0]
        raise EcpiError(f"{url}: the '{protocol}://' protocol needs the Python package "
                        f"'{package}', which is not installed ({hint})") from None
    except ValueError as err:
        if "Protocol not known" in str(err):
            raise EcpiError(f"{url}: unknown protocol '{protocol}://'; expected a local path "
                            "or file://, memory://, s3://, gs://") from None
        raise


def _url_like(path: str, original: str) -> str:
    """A path from fsspec written the way the user wrote `original` (plain path or URL)."""
    if "://" not in original:
        return path
    protocol = protocol_of(original)
    if protocol == "memory":  # memory paths are rooted at '/': memory:///a would not round-trip
        path = path.lstrip("/")
    return f"{protocol}://{path}"


def join(url: str, name: str) -> str:
    if "://" not in url:
        return os.path.join(url, name)
    return url.rstrip("/") + "/" + name.lstrip("/")


def basename(url: str) -> str:
    return posixpath.basename(url.rstrip("/"))


def parent(url: str) -> str:
    if "://" not in url:
        return os.path.dirname(os.path.abspath(url))
    protocol, path = url.split("://", 1)
    return f"{protocol}://{posixpath.dirname(path.rstrip('/'))}"


# ============================================================================================
# Reading and querying
# ============================================================================================
@contextlib.contextmanager
def open_file(url: str, mode: str = "rb", **kwargs):
    """Open a file for reading or (non-atomic) writing; retries the opening only."""
    fs, path = filesystem(url)
    stream = retry(fs.open, path, mode, **kwargs)
    try:
        yield stream
    finally:
        stream.close()


@_retried
def read_range(url: str, start: int, length: int) -> bytes:
    """Bytes [start, start + length) of a file: one byte-range request on object stores."""
    fs, path = filesystem(url)
    return fs.cat_file(path, start=start, end=start + length)


@_retried
def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    return fs.cat_file(path)


@_retried
def size(url: str) -> int:
    fs, path = filesystem(url)
    return int(fs.size(path))


@_retried
def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(fs.exists(path))


@_retried
def isdir(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(fs.isdir(path))


@_retried
def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob, written like the pattern (the protocol is kept)."""
    fs, path = filesystem(pattern)
    return sorted(_url_like(match, pattern) for match in fs.glob(path))


@_retried
def listdir(url: str) -> list[str]:
    """Sorted names (not paths) of the entries of a directory or prefix."""
    fs, path = filesystem(url)
    return sorted(basename(entry) for entry in fs.ls(path, detail=False)
                  if entry.rstrip("/") != path.rstrip("/"))


def output_location_exists(url: str) -> bool:
    """A local directory must exist; on object stores, where directories are only key
    prefixes, it is enough that the bucket (or the prefix) can be listed."""
    if is_local(url):
        return isdir(url)
    fs, path = filesystem(url)
    root = path.strip("/").split("/", 1)[0]
    try:
        return bool(retry(fs.isdir, path) or retry(fs.ls, root or "/"))
    except (FileNotFoundError, PermissionError):
        return False
    except Exception as err:  # noqa: BLE001 - any storage failure is a user-facing error here
        raise EcpiError(f"{url}: cannot list this location ({type(err).__name__}: {err})") \
            from None


# ============================================================================================
# Writing
# ============================================================================================
def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_CREATE_MODE = _umask_mode()


class WriteError(EcpiError):
    """A file that could not be written, on one line: '<url>: cannot write it (<cause>)'. The
    OSError's errno is kept (`errno`: ENOSPC for a full disk), for whoever must react."""

    obs_id = None  # the observation the file belongs to, where the writer knows it

    def __init__(self, url: str, error: OSError):
        self.url, self.errno = url, getattr(error, "errno", None)
        super().__init__(f"{url}: cannot write it ({describe_os_error(error)})")


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class _CauseKeepingStream:
    """The file an atomic write fills: every write goes through it, and the first OSError met
    is kept, so that the cause (its errno) survives libraries that replace it. astropy's
    free-space check turns a full disk into `AttributeError: 'list' object has no attribute
    '_file'` when writing to a file object, or into an OSError without errno; numpy's
    `tofile` into 'OSError: 65520 requested and 53312 written'. The object has no `raw`,
    `buffer` or `fileno`, so astropy writes arrays through `write`, where they are seen."""

    def __init__(self, file, name: str):
        self._file, self.name, self.cause = file, name, None
        self.mode = "wb"

    def _kept(self, method, *args):
        try:
            return method(*args)
        except OSError as error:
            self.cause = self.cause or error
            raise

    def write(self, data):
        return self._kept(self._file.write, data)

    def flush(self):
        return self._kept(self._file.flush)

    def seek(self, offset, whence=0):
        return self._file.seek(offset, whence)

    def tell(self):
        return self._file.tell()

    def seekable(self):
        return True

    def writable(self):
        return True

    def readable(self):
        return False

    @property
    def closed(self):
        return self._file.closed

    def close(self):  # the atomic writer closes the real file
        return None


@contextlib.contextmanager
def atomic_write(url: str, durable: bool = True):
    """Write a binary file that appears at `url` complete or not at all.

    Yields a local file object. Local: a temporary file in the same directory, then
    os.replace. Remote: the local temporary file is uploaded to a temporary key next to the
    target, then moved (copy + delete on object stores). On error nothing is left behind, and
    an OSError (full disk, read-only file system, ...) becomes one `WriteError` line naming
    `url` and the cause, also when the writer (astropy, numpy) hid it behind another error:
    every writer of the package goes through here, so each gets the same contained failure.
    """
    stream = None
    try:
        with _atomic_write(url, durable) as (file, temporary):
            stream = _CauseKeepingStream(file, temporary)
            yield stream
    except OSError as err:
        raise WriteError(url, stream.cause if stream is not None and stream.cause else err) \
            from None
    except Exception:
        if stream is not None and stream.cause is not None:
            raise WriteError(url, stream.cause) from None
        raise


def describe_os_error(err: OSError) -> str:
    """'No space left on device (errno 28)': the cause of an I/O failure, on one line."""
    if err.strerror:
        return f"{err.strerror} (errno {err.errno})" if err.errno else err.strerror
    return " ".join(f"{type(err).__name__}: {err}".split())


@contextlib.contextmanager
def _atomic_write(url: str, durable: bool = True):
    if is_local(url):
        _, target = filesystem(url)
        directory = os.path.dirname(os.path.abspath(target))
        os.makedirs(directory, exist_ok=True)  # like object stores, where prefixes are implicit
        handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.",
                                             suffix=".part", dir=directory)
        try:
            with os.fdopen(handle, "wb") as stream:
                yield stream, temporary
                stream.flush()
                if durable:  # temporary intermediates skip the (slow) flush to disk
                    os.fsync(stream.fileno())
            os.chmod(temporary, _CREATE_MODE)  # mkstemp makes 0600; products are plain files
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
            raise
        return
    fs, target = filesystem(url)
    temporary_key = posixpath.join(posixpath.dirname(target),
                                   f".{posixpath.basename(target)}.{uuid.uuid4().hex}.part")
    with tempfile.NamedTemporaryFile(suffix=".part") as spool:
        yield spool, spool.name
        spool.flush()
        try:
            retry(fs.put_file, spool.name, temporary_key)
            retry(fs.mv, temporary_key, target)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm(temporary_key)
            raise


def put_atomic(local_path_or_bytes, url: str, durable: bool = True) -> str:
    """Copy a local file, or write bytes, to `url` atomically; returns `url`."""
    with atomic_write(url, durable) as stream:
        if isinstance(local_path_or_bytes, (bytes, bytearray, memoryview)):
            stream.write(local_path_or_bytes)
        else:
            with open(local_path_or_bytes, "rb") as source:
                while block := source.read(1 << 24):
                    stream.write(block)
    return url


def remove(url: str, missing_ok: bool = True, recursive: bool = False) -> None:
    fs, path = filesystem(url)
    try:
        retry(fs.rm, path, recursive=recursive)
    except FileNotFoundError:
        if not missing_ok:
            raise


def makedirs(url: str) -> None:
    fs, path = filesystem(url)
    retry(fs.makedirs, path, exist_ok=True)


# ============================================================================================
# Input discovery (ICD section 2)
# ============================================================================================
def _has_glob(location: str) -> bool:
    return any(char in location for char in GLOB_CHARACTERS)


def find_observation_dirs(working_in: tuple[str, ...]) -> list[str]:
    """Directories holding an event file: each entry of working_in is a directory or a glob.

    A named directory must exist and hold an event file; directories matched by a glob
    without one are skipped, but a glob must find at least one observation.
    """
    found: list[str] = []
    for location in working_in:
        if _has_glob(location):
            matches = [match for match in glob(location.rstrip("/")) if _holds_events(match)]
            if not matches:
                raise EcpiError(f"[general] working_in = {location}: no directory matching it "
                                f"holds an {TRIPLET_PATTERNS['ECL-EVT-SEC']} file")
            found.extend(matches)
        else:
            if not isdir(location):
                raise EcpiError(f"[general] working_in = {location}: no such directory")
            if not _holds_events(location):
                raise EcpiError(f"[general] working_in = {location}: no "
                                f"{TRIPLET_PATTERNS['ECL-EVT-SEC']} file in this directory (for a "
                                "campaign of observation directories, give a glob such as <dir>/*)")
            found.append(location.rstrip("/") if "://" in location else location)
    return sorted(dict.fromkeys(found))


def _holds_events(directory: str) -> bool:
    return isdir(directory) and any(
        _matches(name, TRIPLET_PATTERNS["ECL-EVT-SEC"]) for name in listdir(directory))


def _matches(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".gz")


def find_triplet(directory: str) -> dict[str, str]:
    """{'ECL-EVT-SEC': url, 'SVO-ATT-CNV': url, 'SVO-ORB-CNV': url}: exactly one of each."""
    names = listdir(directory)
    triplet = {}
    for kind, pattern in TRIPLET_PATTERNS.items():
        matches = [name for name in names if _matches(name, pattern)]
        if len(matches) != 1:
            found = ", ".join(matches) if matches else "none"
            raise EcpiError(f"{directory}: expected exactly one {pattern}[.gz] file, found "
                            f"{found}")
        triplet[kind] = join(directory, matches[0])
    return triplet


# ============================================================================================
# Confinement: every file the pipeline writes or deletes lies inside working_out (ICD 5)
# ============================================================================================
def _check_segment(name: str, root: str) -> None:
    """One path segment of a name we build: no separator, no '.'/'..', printable ASCII."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name
            or not name.isascii() or not name.isprintable()):
        raise EcpiError(f"{root}: refusing the path segment {name!r}: names built inside "
                        "working_out are single, printable file names (no '/', '..')")


def inside(root: str, *segments: str) -> str:
    """`root/seg1/seg2...`, checked to lie inside `root`; the only way we build a path to
    write or delete under working_out.

    Each segment is one file name (no separator, no '..'); locally the result is resolved
    (symbolic links followed) and must stay under the resolved root, so a link planted in
    working_out cannot lead a write or a delete elsewhere. On object stores, where keys have
    no links, the segment check is the whole guard.
    """
    url = root
    for segment in segments:
        _check_segment(str(segment), root)
        url = join(url, str(segment))
    if is_local(root):
        _, root_path = filesystem(root)
        _, path = filesystem(url)
        real_root = os.path.realpath(root_path)
        real = os.path.realpath(path)
        if os.path.commonpath([real_root, real]) != real_root:
            raise EcpiError(f"{url}: resolves to {real}, outside working_out {real_root} "
                            "(a symbolic link?); refusing to write or delete it")
    return url
