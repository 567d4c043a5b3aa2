"""What the server asks the shape worker to run: one `JobSpec` per job (stdlib only: both sides,
and the project's interpreter, import it).

A job runs one *driver* — the document itself, another workspace file that imports and calls
the document's classes, or nothing but synthesized calls — and records the shapes of several
files (`record`): the document, and the driver when it is another file. The driver's plan is
built by the server (analysis/plan.py); every other workspace module the driver imports gets
the same line-preserving plan transform inside the job (shapes/imports.py), read from `overlay`
when the editor holds unsaved text for it.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from torch_lsp.analysis.plan import ExecutionPlan

# A background job is timed on CPU time inside the job (its budget is work, whatever else the
# machine runs); the worker kills it after this many times its timeout of wall time.
BACKGROUND_WALL_FACTOR = 6


@dataclass
class Probe:
    """A class to construct and call with synthesized inputs (shapes/synthesize.py), for classes
    that no driver calls. `hints` carries what static analysis learnt (construction sites,
    stated inputs) as JSON-able data."""

    path: str
    class_name: str
    line: int  # 0-based line of the `class` statement
    hints: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "Probe":
        return cls(data["path"], data["class_name"], int(data["line"]), dict(data.get("hints") or {}))


@dataclass
class JobSpec:
    key: str  # the document the job is for: a newer job with the same key supersedes this one
    main: ExecutionPlan  # the driver that runs (a plan with an empty source runs nothing)
    record: list[str] = field(default_factory=list)  # files whose shapes are recorded (main first)
    overlay: dict[str, str] = field(default_factory=dict)  # path -> unsaved editor text
    roots: list[str] = field(default_factory=list)  # sys.path entries, first wins
    workspace: str | None = None  # imported modules under this folder get the plan transform
    module: str | None = None  # dotted name when main runs with its package context (`-m`)
    cwd: str | None = None
    argv: list[str] = field(default_factory=list)  # sys.argv[1:]
    env: dict[str, str] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)
    observers: list[str] = field(default_factory=list)  # names in shapes/observers.py
    options: dict[str, Any] = field(default_factory=dict)  # per-feature knobs (JSON-able)
    device: str = "meta"
    timeout: float = 5.0
    memory_mb: int = 4096
    # Synthesized calls run after the driver, in background jobs of their own
    # (shapes/probe_jobs.py): niced, in worker slots of their own, timed on CPU time.
    background: bool = False

    @property
    def recorded(self) -> list[str]:
        files = [self.main.filename] if self.main.source else []
        return files + [p for p in self.record if p not in files]

    def to_dict(self) -> dict[str, Any]:
        data = self._plain_fields()
        data["main"] = self.main.to_dict()
        return data

    def _plain_fields(self, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Every field but `main` (and `skip`), JSON-ready. Not `asdict(self)`: it deep-copies
        the plan's statements too (hundreds of dataclasses), once per job sent and once per
        cache key, on the server's event loop, only for them to be replaced."""
        left_out = ("main", "probes", *skip)
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in left_out}
        data["probes"] = [asdict(probe) for probe in self.probes]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobSpec":
        fields = dict(data)
        fields["main"] = ExecutionPlan.from_dict(data["main"])
        fields["probes"] = [Probe.from_dict(p) for p in data.get("probes", [])]
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in fields.items() if k in known})

    def cache_key(self) -> str:
        """Everything that changes the result, hashed: a job with the same key gives the same
        reports (as long as files on disk did not change: the engine's cache is cleared when the
        workspace reports changed files)."""
        import hashlib
        import json

        from torch_lsp.shapes.texts import digest as text_digest

        data = self._plain_fields(skip=("key", "overlay"))
        data["main"] = {"hash": self.main.hash}
        data["overlay"] = {path: text_digest(text) for path, text in self.overlay.items()}  # cached per text
        digest = hashlib.blake2b(json.dumps(data, sort_keys=True, default=str).encode(), digest_size=16)
        return digest.hexdigest()
