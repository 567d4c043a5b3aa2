"""What crosses the process boundary between the shape worker and the server.

Plain stdlib dataclasses serialised as JSON: the worker may run in the *project's* interpreter
(issue: shapes in real projects), which has torch but none of torch-lsp's dependencies, so nothing here
may import a third-party package. No torch here either: the server imports this module.
Lines are 0-based and columns 0-based in code points, like analysis/facts.py.

`from_dict` is the validation: the server reads whatever the worker sent through it, and a
malformed report becomes a `ReportError` (the engine turns it into a "stopped" note), never a
crash of the server.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from torch_lsp.analysis.facts import Position, Span


class ReportError(ValueError):
    """A report that does not have the expected form."""


def _require(data: Any, kind: type, what: str):
    if not isinstance(data, kind):
        raise ReportError(f"{what}: expected {kind.__name__}, got {type(data).__name__}")
    return data


def _int(data: Any, what: str) -> int:
    if isinstance(data, bool) or not isinstance(data, int):
        raise ReportError(f"{what}: expected an integer, got {data!r}")
    return data


@dataclass(frozen=True)
class Range:
    line: int
    col: int
    end_line: int
    end_col: int

    def span(self) -> Span:
        return Span(Position(self.line, self.col), Position(self.end_line, self.end_col))

    def contains(self, line: int, col: int) -> bool:
        return self.span().contains(Position(line, col))

    def size(self) -> tuple[int, int]:
        return (self.end_line - self.line, self.end_col - self.col if self.line == self.end_line else 10**6)

    @classmethod
    def from_dict(cls, data: Any) -> "Range":
        data = _require(data, dict, "range")
        return cls(*(_int(data.get(k), f"range.{k}") for k in ("line", "col", "end_line", "end_col")))


@dataclass(frozen=True)
class Value:
    """A tensor, or a tuple / list / dict holding tensors (e.g. LSTM's `(out, (h, c))`), or an
    object of a project class holding tensors (`NestedTensor(tensors=..., mask=...)`)."""

    kind: str  # "tensor" | "tuple" | "list" | "dict" | "object"
    shape: tuple[int, ...] | None = None  # the example's sizes
    dtype: str | None = None
    items: tuple["Value", ...] = ()
    keys: tuple[str, ...] = ()
    # Per dimension, its name where it follows a free size of the input (`B`, `T`, `H/2`), else
    # None (the dimension is the same whatever size was chosen); None when not known.
    dims: tuple[str | None, ...] | None = None
    type_name: str | None = None  # an object's class

    def text(self) -> str:
        if self.kind == "tensor":
            return f"Tensor[{self.dims_text()}] {self.dtype}"
        inner = [item.text() for item in self.items]
        if self.kind == "object":
            return f"{self.type_name}(" + ", ".join(f"{k}={v}" for k, v in zip(self.keys, inner)) + ")"
        if self.kind == "dict":
            inner = [f"{k!r}: {v}" for k, v in zip(self.keys, inner)]
            return "{" + ", ".join(inner) + "}"
        if self.kind == "list":
            return "[" + ", ".join(inner) + "]"
        return "(" + ", ".join(inner) + ("," if len(inner) == 1 else "") + ")"

    def dims_text(self) -> str:
        """`B, 6, 14, 14`: names where the size is a free choice, numbers where it is fixed."""
        shape = self.shape or ()
        names = self.dims if self.dims is not None and len(self.dims) == len(shape) else (None,) * len(shape)
        return ", ".join(name if name else str(size) for size, name in zip(shape, names))

    @property
    def symbolic(self) -> bool:
        return any(self.dims or ()) or any(item.symbolic for item in self.items)

    @classmethod
    def from_dict(cls, data: Any) -> "Value":
        data = _require(data, dict, "value")
        kind = data.get("kind")
        if kind not in ("tensor", "tuple", "list", "dict", "object"):
            raise ReportError(f"value.kind: unknown kind {kind!r}")
        shape = data.get("shape")
        return cls(
            kind=kind,
            shape=tuple(_int(d, "value.shape") for d in _require(shape, list, "value.shape")) if shape is not None else None,
            dtype=data.get("dtype"),
            items=tuple(cls.from_dict(item) for item in _require(data.get("items", []), list, "value.items")),
            keys=tuple(str(k) for k in _require(data.get("keys", []), list, "value.keys")),
            dims=tuple(str(d) if d is not None else None for d in _require(data["dims"], list, "value.dims"))
            if data.get("dims") is not None else None,
            type_name=str(data["type_name"]) if data.get("type_name") is not None else None,
        )


@dataclass
class VariableShapes:
    """Values a name held after the statement at `line` ran (distinct ones, in order)."""

    name: str
    line: int
    end_line: int
    values: list[Value]

    @classmethod
    def from_dict(cls, data: Any) -> "VariableShapes":
        data = _require(data, dict, "variable")
        return cls(str(data.get("name")), _int(data.get("line"), "variable.line"),
                   _int(data.get("end_line"), "variable.end_line"),
                   [Value.from_dict(v) for v in _require(data.get("values"), list, "variable.values")])


@dataclass
class ExpressionShapes:
    """Output of a torch call / module call, located by its source range."""

    range: Range
    values: list[Value]
    # For an nn.Module call: the layer as constructed, e.g. "Conv2d(3, 6, kernel_size=(5, 5))".
    module: str | None = None
    parameters: int | None = None  # of that layer and its children, for the model summary

    @classmethod
    def from_dict(cls, data: Any) -> "ExpressionShapes":
        data = _require(data, dict, "expression")
        parameters = data.get("parameters")
        return cls(Range.from_dict(data.get("range")),
                   [Value.from_dict(v) for v in _require(data.get("values"), list, "expression.values")],
                   data.get("module"), _int(parameters, "expression.parameters") if parameters is not None else None)


@dataclass(frozen=True)
class Location:
    """A place in another (or the same) file: the other end of a cross-file finding."""

    path: str
    range: Range
    message: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> "Location":
        data = _require(data, dict, "location")
        return cls(str(data.get("path")), Range.from_dict(data.get("range")), str(data.get("message", "")))


@dataclass
class ShapeError:
    code: str
    message: str
    range: Range
    raw: str = ""  # torch's own text, for the curious and for tests
    # The same failure seen from the other files of the run: the call site in the driver for an
    # error inside the model file, the failing line in the model file for the driver's call.
    related: list[Location] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any) -> "ShapeError":
        data = _require(data, dict, "error")
        return cls(str(data.get("code")), str(data.get("message")), Range.from_dict(data.get("range")),
                   str(data.get("raw", "")),
                   [Location.from_dict(r) for r in _require(data.get("related", []), list, "error.related")])


@dataclass(frozen=True)
class Note:
    """Something the user should know about this file's shapes, at a line or for the file
    (line None): why a class has no shapes, a dataset replaced by a stand-in, an argv filled in.
    `kind` groups notes for the views ("why", "stand-in", "input", "argv", ...)."""

    message: str
    line: int | None = None
    kind: str = "info"

    @classmethod
    def from_dict(cls, data: Any) -> "Note":
        data = _require(data, dict, "note")
        line = data.get("line")
        return cls(str(data.get("message")), _int(line, "note.line") if line is not None else None,
                   str(data.get("kind", "info")))


@dataclass(frozen=True)
class Origin:
    """How the shapes of a file were obtained.

    kind: "self" (the file ran as a script), "driver" (another workspace file imported and
    called it: `path` and `line` are that call site), or "synthesized" (torch-lsp built the
    call: `detail` says from what)."""

    kind: str = "self"
    path: str | None = None
    line: int | None = None
    detail: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> "Origin":
        data = _require(data, dict, "origin")
        line = data.get("line")
        return cls(str(data.get("kind", "self")), data.get("path"),
                   _int(line, "origin.line") if line is not None else None, str(data.get("detail", "")))


@dataclass
class ShapeReport:
    plan_hash: str = ""
    path: str = ""  # the file this report describes
    device: str = "meta"
    variables: list[VariableShapes] = field(default_factory=list)
    expressions: list[ExpressionShapes] = field(default_factory=list)
    errors: list[ShapeError] = field(default_factory=list)
    # Why the job ended early without a user error (timeout, sys.exit, blocked side effect...).
    stopped: str | None = None
    stopped_line: int | None = None
    timed_out: bool = False  # a stop the editor shows (TL299): the user's code hangs
    # Also shown (TL299): the job's process died (os._exit, a crash) or hit its memory limit.
    ended: bool = False
    reran_on_cpu: bool = False
    duration_ms: float = 0.0
    origin: Origin = field(default_factory=Origin)
    notes: list[Note] = field(default_factory=list)
    # Sections produced by the job's observers (shapes/observers.py), by observer name.
    extras: dict[str, Any] = field(default_factory=dict)

    def variables_at(self, line: int) -> list[VariableShapes]:
        return [v for v in self.variables if v.line <= line <= v.end_line]

    def expression_at(self, line: int, col: int) -> ExpressionShapes | None:
        """The innermost recorded expression containing the position."""
        hits = [e for e in self.expressions if e.range.contains(line, col)]
        return min(hits, key=lambda e: e.range.size(), default=None)

    @property
    def has_shapes(self) -> bool:
        return bool(self.variables or self.expressions)

    # serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> "ShapeReport":
        data = _require(data, dict, "report")
        stopped_line = data.get("stopped_line")
        return cls(
            plan_hash=str(data.get("plan_hash", "")),
            path=str(data.get("path", "")),
            device=str(data.get("device", "meta")),
            variables=[VariableShapes.from_dict(v) for v in _require(data.get("variables", []), list, "variables")],
            expressions=[ExpressionShapes.from_dict(e) for e in _require(data.get("expressions", []), list, "expressions")],
            errors=[ShapeError.from_dict(e) for e in _require(data.get("errors", []), list, "errors")],
            stopped=data.get("stopped"),
            stopped_line=_int(stopped_line, "stopped_line") if stopped_line is not None else None,
            timed_out=bool(data.get("timed_out", False)),
            ended=bool(data.get("ended", False)),
            reran_on_cpu=bool(data.get("reran_on_cpu", False)),
            duration_ms=float(data.get("duration_ms", 0.0)),
            origin=Origin.from_dict(data.get("origin", {})),
            notes=[Note.from_dict(n) for n in _require(data.get("notes", []), list, "notes")],
            extras=_require(data.get("extras", {}), dict, "extras"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> "ShapeReport":
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ReportError(f"not JSON: {error}") from error
        return cls.from_dict(data)


def reports_from_json(text: str | bytes) -> dict[str, ShapeReport]:
    """A job's result: one report per recorded file, keyed by path."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ReportError(f"not JSON: {error}") from error
    data = _require(data, dict, "job result")
    return {str(path): ShapeReport.from_dict(report) for path, report in data.items()}


def reports_to_json(reports: dict[str, ShapeReport]) -> str:
    return json.dumps({path: report.to_dict() for path, report in reports.items()}, separators=(",", ":"))
