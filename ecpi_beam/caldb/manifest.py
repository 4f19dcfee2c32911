"""The CALDB manifest `caldb.json` (ICD section 3): parse, validate, write.

`{"files": [{"product", "file", "version", "valid_from", "sha256", ...}, ...]}`, file paths
relative to the CALDB directory; more keys are allowed and kept.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import asdict, dataclass

from ecpi_beam.errors import EcpiError

MANIFEST_NAME = "caldb.json"
REQUIRED_PRODUCTS = ("ECL-MSK-PAT", "ECL-PIX-CAL", "ECL-RSP-RMF", "ECL-RSP-ARF", "ECL-RSP-IRF")
_REQUIRED_KEYS = ("product", "file", "version", "valid_from", "sha256")


@dataclass(frozen=True)
class ManifestEntry:
    product: str
    file: str
    version: str
    valid_from: str
    sha256: str
    description: str = ""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_manifest(text, source: str) -> dict[str, ManifestEntry]:
    """Entries of a manifest by product name; `source` names the file in error messages."""
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise EcpiError(f"{source}: not valid JSON ({err}); expected a CALDB manifest") from None
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, list):
        raise EcpiError(f"{source}: no 'files' list; expected {{\"files\": [...]}} (ICD section 3)")
    entries: dict[str, ManifestEntry] = {}
    for number, item in enumerate(files):
        missing = [key for key in _REQUIRED_KEYS if not isinstance(item, dict) or key not in item]
        if missing:
            raise EcpiError(f"{source}: files[{number}] lacks {', '.join(missing)}")
        entry = ManifestEntry(**{key: str(item[key]) for key in _REQUIRED_KEYS},
                              description=str(item.get("description", "")))
        _check_entry(entry, source)
        if entry.product in entries:
            raise EcpiError(f"{source}: product {entry.product} is listed twice")
        entries[entry.product] = entry
    return entries


def _check_entry(entry: ManifestEntry, source: str) -> None:
    # paths stay inside the CALDB directory: a manifest from a server must not write elsewhere
    parts = entry.file.replace("\\", "/").split("/")
    if entry.file.startswith(("/", "\\")) or ".." in parts or not entry.file:
        raise EcpiError(f"{source}: file {entry.file!r} of {entry.product} must be a relative "
                        "path inside the CALDB directory")
    if len(entry.sha256) != 64 or any(c not in "0123456789abcdef" for c in entry.sha256.lower()):
        raise EcpiError(f"{source}: sha256 {entry.sha256!r} of {entry.product} is not 64 hex "
                        "digits")
    try:
        datetime.date.fromisoformat(entry.valid_from[:10])
    except ValueError:
        raise EcpiError(f"{source}: valid_from {entry.valid_from!r} of {entry.product} is not "
                        "an ISO date") from None


def manifest_text(entries, **extra) -> str:
    """The JSON text of a manifest (stable key order, so generated sets are reproducible)."""
    document = dict(extra)
    document["files"] = [asdict(entry) for entry in entries]
    return json.dumps(document, indent=2) + "\n"


def write_manifest(directory, entries, **extra) -> str:
    """Write `caldb.json` in `directory`; returns its path."""
    path = os.path.join(os.fspath(directory), MANIFEST_NAME)
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(manifest_text(entries, **extra))
    return path


def entry_for_file(directory, product: str, file: str, version: str, valid_from: str,
                   description: str = "") -> ManifestEntry:
    """A manifest entry for a file already written in `directory` (computes its sha256)."""
    sha = sha256_file(os.path.join(os.fspath(directory), file))
    return ManifestEntry(product, file, version, valid_from, sha, description)
