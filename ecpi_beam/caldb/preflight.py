"""The whole CALDB checked before a run starts: every file present and equal to its sha256.

Without it a missing RMF or an edited IRF is found only inside the pipeline, after a long
traceback; here it is one line (ICD section 3, docs/reliability.md).
"""
from __future__ import annotations

from ecpi_beam.caldb.manifest import MANIFEST_NAME, REQUIRED_PRODUCTS, sha256_bytes
from ecpi_beam.caldb.reader import Caldb, _read_bytes
from ecpi_beam.errors import EcpiError


def caldb_problems(caldb_dir: str) -> list[str]:
    """Problems of the CALDB at `caldb_dir`: unlisted required products, missing or altered
    files (every file of the manifest is read and hashed)."""
    caldb = Caldb.open(caldb_dir, verify=True)  # an unreadable manifest raises its own line
    problems = [f"{MANIFEST_NAME} lists no {product}" for product in REQUIRED_PRODUCTS
                if product not in caldb.entries]
    for product, entry in sorted(caldb.entries.items()):
        try:
            data = _read_bytes(caldb.url(product), product)
        except EcpiError:
            problems.append(f"{entry.file} ({product}) is missing")
            continue
        if sha256_bytes(data) != entry.sha256.lower():
            problems.append(f"{entry.file} ({product}) has sha256 {sha256_bytes(data)[:12]}..., "
                            f"not {entry.sha256[:12]}... as {MANIFEST_NAME} says")
    return problems


def check_caldb(caldb_dir: str) -> None:
    """Raise one EcpiError line naming every CALDB problem."""
    problems = caldb_problems(caldb_dir)
    if problems:
        raise EcpiError(f"CALDB {caldb_dir}: {'; '.join(problems)}; reinstall it with "
                        "`caldb_init -s` (the default set) or `caldb_init`")
