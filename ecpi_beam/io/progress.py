"""Progress marks of a run: one empty file per element a step has finished, under
`<working_out>/.ecpi-progress/` (docs/runners.md, "Progress").

A side channel that works the same on every runner whose workers share working_out (the
DirectRunner in one process or several, local clusters): Beam's metrics are read only once
a pipeline is over, so they cannot say how far it is. An element done is one zero-byte file
named `<step>.<random>` (no data: a full disk takes none of it); ecpi_run counts them by step
while the pipeline runs, and removes the folder afterwards. Marking is best effort: a mark
that cannot be written is skipped, never an element's failure.
"""
from __future__ import annotations

import collections
import dataclasses
import uuid

from ecpi_beam.io import fs

PROGRESS_FOLDER = ".ecpi-progress"


@dataclasses.dataclass(frozen=True)
class ProgressMarks:
    """Where the progress marks of one run go (picklable: it travels with the DoFns)."""

    working_out: str

    def mark(self, step: str) -> None:
        try:
            fs.put_atomic(b"", fs.inside(self.working_out, PROGRESS_FOLDER,
                                         f"{step}.{uuid.uuid4().hex}"), durable=False)
        except Exception:  # noqa: BLE001 - progress is never worth a failure
            pass

    def counts(self) -> collections.Counter:
        """step -> elements done so far."""
        folder = fs.inside(self.working_out, PROGRESS_FOLDER)
        try:
            names = fs.listdir(folder)
        except (FileNotFoundError, OSError):
            return collections.Counter()
        return collections.Counter(name.split(".", 1)[0] for name in names
                                   if not name.startswith("."))

    def clear(self) -> None:
        folder = fs.inside(self.working_out, PROGRESS_FOLDER)
        if fs.exists(folder):
            fs.remove(folder, recursive=True)
