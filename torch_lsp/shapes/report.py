"""What crosses the process boundary between the shape worker and the server.

Plain pydantic models, serialised as JSON. No torch here: the server imports this module.
Lines are 0-based and columns 0-based in code points, like analysis/facts.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from torch_lsp.analysis.facts import Position, Span


class Range(BaseModel):
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


class Value(BaseModel):
    """A tensor, or a tuple / list / dict holding tensors (e.g. LSTM's `(out, (h, c))`)."""

    kind: Literal["tensor", "tuple", "list", "dict"]
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    items: list["Value"] = Field(default_factory=list)
    keys: list[str] = Field(default_factory=list)

    def text(self) -> str:
        if self.kind == "tensor":
            dims = ", ".join(str(d) for d in self.shape or ())
            return f"Tensor[{dims}] {self.dtype}"
        inner = [item.text() for item in self.items]
        if self.kind == "dict":
            inner = [f"{k!r}: {v}" for k, v in zip(self.keys, inner)]
            return "{" + ", ".join(inner) + "}"
        if self.kind == "list":
            return "[" + ", ".join(inner) + "]"
        return "(" + ", ".join(inner) + ("," if len(inner) == 1 else "") + ")"


class VariableShapes(BaseModel):
    """Values a name held after the statement at `line` ran (distinct ones, in order)."""

    name: str
    line: int
    end_line: int
    values: list[Value]


class ExpressionShapes(BaseModel):
    """Output of a torch call / module call, located by its source range."""

    range: Range
    values: list[Value]
    # For an nn.Module call: the layer as constructed, e.g. "Conv2d(3, 6, kernel_size=(5, 5))".
    module: str | None = None
    parameters: int | None = None  # of that layer and its children, for the model summary


class ShapeError(BaseModel):
    code: str
    message: str
    range: Range
    raw: str = ""  # torch's own text, for the curious and for tests


class ShapeReport(BaseModel):
    plan_hash: str = ""
    device: str = "meta"
    variables: list[VariableShapes] = Field(default_factory=list)
    expressions: list[ExpressionShapes] = Field(default_factory=list)
    errors: list[ShapeError] = Field(default_factory=list)
    # Why the job ended early without a user error (timeout, sys.exit, blocked side effect...).
    stopped: str | None = None
    stopped_line: int | None = None
    timed_out: bool = False  # the one kind of stop the editor shows (TL299): the user's code hangs
    reran_on_cpu: bool = False
    duration_ms: float = 0.0

    def variables_at(self, line: int) -> list[VariableShapes]:
        return [v for v in self.variables if v.line <= line <= v.end_line]

    def expression_at(self, line: int, col: int) -> ExpressionShapes | None:
        """The innermost recorded expression containing the position."""
        hits = [e for e in self.expressions if e.range.contains(line, col)]
        return min(hits, key=lambda e: e.range.size(), default=None)
