"""The job being run, for the worker-side modules that act on it from inside user code
(inputs.py's stand-ins, script_env.py's patches, synthesize.py's probes): they add notes to a
file's report and read the job's settings through `current()`.

Stdlib only (imported by modules that must not import torch at module level). One job per
process: the worker forks each job, so a module-level "current job" is exact.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch_lsp.shapes.report import Note
    from torch_lsp.shapes.spec import JobSpec


@dataclass
class JobContext:
    spec: "JobSpec"
    device: Any = None  # torch.device of the run (meta, cpu, cuda)
    notes: dict[str, list["Note"]] = field(default_factory=dict)
    # Per-file facts for other parts of the report (e.g. synthesized inputs, origins), by kind.
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    recorder: Any = None  # the tracer's Recorder while the driver and probes run
    sources: Any = None  # imports.ProjectSources: the job's planned project files (probes load them)
    # The job's clock: wall time for a driver; CPU time for a background job of synthesized
    # calls, whose budget is the work it may do, whatever else the machine runs (a loaded
    # machine gives the same shapes, later).
    clock: Any = time.monotonic
    started: float = 0.0  # clock() when the job started (probes share the time left)

    def __post_init__(self) -> None:
        if self.spec is not None and getattr(self.spec, "background", False):
            self.clock = time.process_time
        self.started = self.clock()
    # Objects several observers of this job share (e.g. the module-call tree the cost observers
    # attribute their counts to), by name.
    shared: dict[str, Any] = field(default_factory=dict)

    def note(self, message: str, path: str | None = None, line: int | None = None, kind: str = "info") -> None:
        """Tell the user something about `path` (default: the driver), at `line` if known."""
        from torch_lsp.shapes.report import Note

        path = path or self.spec.main.filename
        notes = self.notes.setdefault(path, [])
        note = Note(message, line, kind)
        if note not in notes:
            notes.append(note)

    def user_line(self) -> tuple[str, int] | None:
        """(file, 0-based line) of the innermost frame of a recorded file on the stack: where a
        note about "this call" belongs."""
        recorded = set(self.spec.recorded)
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename in recorded:
                return frame.f_code.co_filename, frame.f_lineno - 1
            frame = frame.f_back
        return None

    def note_here(self, message: str, kind: str = "info") -> None:
        """A note at the user's line that is running now (or for the driver, when none is)."""
        where = self.user_line()
        if where is None:
            self.note(message, kind=kind)
        else:
            self.note(message, where[0], where[1], kind)


_current: JobContext | None = None


def now() -> float:
    """The current job's clock (deadlines of synthesized calls are on it); wall time outside."""
    return _current.clock() if _current is not None else time.monotonic()


def current() -> JobContext | None:
    return _current


def activate(context: JobContext | None) -> None:
    global _current
    _current = context
