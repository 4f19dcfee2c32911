"""Helpers of the fault-injection suite (tests/faults): run `ecpi_run` in this process (the
console-script function, so exit codes and stderr are the user's), snapshot everything outside
working_out, and assert what every fault must get (docs/reliability.md):
exit code, one `error:` line naming file/key/column/row, no traceback, nothing written or
deleted outside working_out, no temporary or partial file left.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from astropy.io import fits

from pipeline_fixtures import assert_same_hdu_data, leftover_temporaries, stderr_lines

OURS_LEFT_BEHIND = (".ecpi-parts", ".ecpi-failures", ".ecpi-run.lock")


def snapshot(root: Path, skip: Path | None = None) -> dict:
    """{relative path: (kind, sha256 or link target)} of everything under root but `skip`."""
    state = {}
    for directory, dirs, files in os.walk(root):
        here = Path(directory)
        if skip is not None and (here == skip or skip in here.parents):
            dirs[:] = []
            continue
        for name in dirs + files:
            path = here / name
            if skip is not None and path == skip:
                continue
            key = str(path.relative_to(root))
            if path.is_symlink():
                state[key] = ("link", os.readlink(path))
            elif path.is_dir():
                state[key] = ("dir", "")
            else:
                state[key] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def run_in_process(params: Path, workspace: Path, capfd, monkeypatch, *beam_args):
    """(exit code, stdout, stderr) of `ecpi_run params.ini` run by this process."""
    from ecpi_beam.cli import ecpi_run

    monkeypatch.setenv("ECPI_HOME", str(workspace))
    capfd.readouterr()
    code = ecpi_run([str(params), *beam_args])
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr_lines(stderr) if line.startswith("error: ")]


def assert_fault_outcome(code, stdout, stderr, words, *, expected_code=2, n_errors=1):
    """Exit code, `n_errors` one-line errors (together naming every word), no traceback and
    nothing else on stderr but warnings."""
    report = f"exit code {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    assert code == expected_code, report
    assert "Traceback" not in stdout + stderr, report
    errors = error_lines(stderr)
    assert len(errors) == n_errors, report
    others = [line for line in stderr_lines(stderr)
              if not line.startswith(("error: ", "warning: "))]
    assert others == [], report
    joined = "\n".join(errors)
    for word in words:
        assert word in joined, f"{word!r} not in the error:\n{joined}"
    return errors


def assert_working_out_clean(working_out: Path):
    """No temporary, partial or internal file of ours left in working_out."""
    assert leftover_temporaries(working_out) == []
    left = [name for name in OURS_LEFT_BEHIND if (working_out / name).exists()]
    assert left == [], left


def assert_same_products(ours: Path, reference: Path):
    """Same HDUs, same data (headers differ only by DATE and checksums)."""
    assert_same_hdu_data(ours, reference)
    with fits.open(ours) as mine, fits.open(reference) as theirs:
        for hdu_a, hdu_b in zip(mine, theirs):
            differing = {key for key in set(hdu_a.header) | set(hdu_b.header)
                         if hdu_a.header.get(key) != hdu_b.header.get(key)}
            assert differing <= {"DATE", "CHECKSUM", "DATASUM"}, (ours.name, differing)
