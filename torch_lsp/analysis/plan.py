"""The execution plan for the shape engine: which code runs, and what is neutralised.

Pure analysis (libcst only): no torch, no LSP types. The plan is the document's own source with
a few *line-preserving* text edits, so that every line and column the worker records maps back
to the user's file without any translation table:

- training loops (a loop whose body calls ``.backward()`` or steps an optimizer, or that iterates
  a data loader) run their body once: ``for b in loader:`` becomes
  ``for b in __torch_lsp__.once((loader)):``; ``while c:`` becomes
  ``while __torch_lsp__.once_while(<line>) and (c):``;
- optimizer steps, ``torch.save`` and ``torch.load`` are replaced by a no-op call of the same
  line count (shapes never need them; Adam on meta parameters even raises);
- everything else (imports, definitions, module-level code and the ``__main__`` block) runs as
  written, under the worker's runtime guards (see docs/shapes.md).

The plan also lists, per statement, the names it binds, so the tracer records exactly the
variables a line assigns instead of diffing every local after every line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import libcst as cst
import libcst.matchers as m
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

HELPER = "__torch_lsp__"

# Calls whose effects never matter for shapes and that must not run: (dotted name, reason).
_SKIPPED_CALLS = {
    "torch.save": "torch.save writes a file",
    "torch.load": "torch.load reads a checkpoint that may not exist",
    "torch.hub.load": "torch.hub.load downloads",
    "torch.hub.load_state_dict_from_url": "downloads weights",
}
_TRAINING_METHODS = {"backward", "step", "zero_grad"}


@dataclass(frozen=True)
class Statement:
    """One executed statement: its 0-based line range and the names it binds."""

    line: int
    end_line: int
    binds: tuple[str, ...] = ()


@dataclass(frozen=True)
class Neutralised:
    line: int
    reason: str


@dataclass(frozen=True)
class ExecutionPlan:
    filename: str
    source: str
    statements: tuple[Statement, ...] = ()
    neutralised: tuple[Neutralised, ...] = ()
    # (first line, last line) of each training loop that runs once.
    run_once_loops: tuple[tuple[int, int], ...] = ()
    error: str | None = field(default=None, compare=False)

    @cached_property
    def hash(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.filename.encode())
        digest.update(b"\0")
        digest.update(self.source.encode())
        return digest.hexdigest()[:32]

    def to_dict(self) -> dict:
        """JSON-ready form, for sending the plan to the worker process."""
        return {
            "filename": self.filename,
            "source": self.source,
            "statements": [[s.line, s.end_line, list(s.binds)] for s in self.statements],
            "neutralised": [[n.line, n.reason] for n in self.neutralised],
            "run_once_loops": [list(loop) for loop in self.run_once_loops],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ExecutionPlan":
        return cls(
            filename=data["filename"],
            source=data["source"],
            statements=tuple(Statement(a, b, tuple(c)) for a, b, c in data["statements"]),
            neutralised=tuple(Neutralised(a, b) for a, b in data["neutralised"]),
            run_once_loops=tuple((a, b) for a, b in data["run_once_loops"]),
        )

    @cached_property
    def statement_of_line(self) -> dict[int, Statement]:
        """Every line inside a statement -> that statement (inner statements win)."""
        table: dict[int, Statement] = {}
        for stmt in sorted(self.statements, key=lambda s: s.end_line - s.line, reverse=True):
            for line in range(stmt.line, stmt.end_line + 1):
                table[line] = stmt
        return table


def build_plan(source: str, filename: str = "<document>") -> ExecutionPlan:
    """Source text -> plan. A file that does not parse yields a plan with `error` set."""
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        return ExecutionPlan(filename, "", error=f"syntax error: {exc.message} (line {exc.raw_line})")
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    collector = _PlanCollector(wrapper.resolve(PositionProvider), source.splitlines())
    wrapper.module.visit(collector)
    return ExecutionPlan(
        filename=filename,
        source=_apply_edits(source, collector.edits),
        statements=tuple(collector.statements),
        neutralised=tuple(collector.neutralised),
        run_once_loops=tuple(sorted(collector.run_once_loops)),
    )


# --------------------------------------------------------------------------------------------
# Collection


@dataclass(frozen=True, order=True)
class _Edit:
    line: int  # 0-based
    col: int  # code points
    end_line: int
    end_col: int
    text: str


def dotted_name(node: cst.BaseExpression) -> str | None:
    """`torch.nn.Linear` -> "torch.nn.Linear"; anything that is not a plain dotted name -> None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted_name(node.value)
        return f"{base}.{node.attr.value}" if base else None
    return None


def _bound_names(target: cst.BaseExpression) -> list[str]:
    if isinstance(target, (cst.Tuple, cst.List)):
        return [name for el in target.elements for name in _bound_names(el.value)]
    if isinstance(target, cst.StarredElement):
        return _bound_names(target.value)
    name = dotted_name(target)
    # `self.pe = ...` is worth showing; `a.b.c = ...` rarely is and costs a getattr chain.
    if name is not None and name.count(".") <= 1:
        return [name]
    return []


class _LoopContents(cst.CSTVisitor):
    """Does a loop body train (backward / step / zero_grad) or read a data loader?"""

    def __init__(self, loader_names: set[str]) -> None:
        self.trains = False
        self.loader_names = loader_names

    def visit_Call(self, node: cst.Call) -> None:
        if isinstance(node.func, cst.Attribute) and node.func.attr.value in _TRAINING_METHODS:
            self.trains = True

    def visit_For(self, node: cst.For) -> None:
        if _iterates_loader(node.iter, self.loader_names):
            self.trains = True


def _iterates_loader(iterable: cst.BaseExpression, loader_names: set[str]) -> bool:
    names = {n.value for n in m.findall(iterable, m.Name())}
    attrs = {a.attr.value for a in m.findall(iterable, m.Attribute())}
    return any("loader" in n.lower() or n in loader_names for n in names | attrs)


class _PlanCollector(cst.CSTVisitor):
    def __init__(self, positions, lines: list[str]) -> None:
        self.positions = positions
        self.lines = lines
        self.edits: list[_Edit] = []
        self.statements: list[Statement] = []
        self.neutralised: list[Neutralised] = []
        self.run_once_loops: set[tuple[int, int]] = set()
        self.loader_names: set[str] = set()
        self.optimizer_names: set[str] = set()

    def _range(self, node: cst.CSTNode) -> CodeRange:
        return self.positions[node]

    def _line_range(self, node: cst.CSTNode) -> tuple[int, int]:
        rng = self.positions[node]
        return rng.start.line - 1, rng.end.line - 1

    def _statement(self, node: cst.CSTNode, binds: list[str], header_only: cst.CSTNode | None = None):
        rng = self._range(node)
        end = self._range(header_only).end.line if header_only is not None else rng.end.line
        self.statements.append(Statement(rng.start.line - 1, end - 1, tuple(dict.fromkeys(binds))))

    # statements -----------------------------------------------------------------------------

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        binds: list[str] = []
        for small in node.body:
            if isinstance(small, cst.Assign):
                for target in small.targets:
                    binds += _bound_names(target.target)
                self._remember_kinds(small.targets, small.value)
            elif isinstance(small, (cst.AnnAssign, cst.AugAssign)) and getattr(small, "value", None):
                binds += _bound_names(small.target)
        self._statement(node, binds)

    def _remember_kinds(self, targets, value: cst.BaseExpression) -> None:
        """Names bound to DataLoaders / optimizers, so loops over them and their steps are known."""
        if not isinstance(value, cst.Call):
            return
        callee = dotted_name(value.func) or ""
        names = [n for t in targets for n in _bound_names(t.target)]
        if callee.endswith("DataLoader"):
            self.loader_names.update(names)
        elif ("optim." in callee and "lr_scheduler" not in callee) or callee.endswith("GradScaler"):
            self.optimizer_names.update(names)

    def visit_For(self, node: cst.For) -> None:
        self._statement(node, _bound_names(node.target), header_only=node.iter)
        if self._is_training_loop(node, node.iter):
            it = self._range(node.iter)
            self._wrap(it, f"{HELPER}.once((", "))")
            self.run_once_loops.add(self._line_range(node))

    def visit_While(self, node: cst.While) -> None:
        self._statement(node, [], header_only=node.test)
        if self._is_training_loop(node, None):
            line = self._range(node).start.line - 1
            self._wrap(self._range(node.test), f"{HELPER}.once_while({line}) and (", ")")
            self.run_once_loops.add(self._line_range(node))

    def visit_With(self, node: cst.With) -> None:
        binds = [n for item in node.items if item.asname for n in _bound_names(item.asname.name)]
        last = node.items[-1].item
        self._statement(node, binds, header_only=last)

    def _is_training_loop(self, node: cst.CSTNode, iterable: cst.BaseExpression | None) -> bool:
        if iterable is not None and _iterates_loader(iterable, self.loader_names):
            return True
        contents = _LoopContents(self.loader_names)
        node.body.visit(contents)
        return contents.trains

    # neutralised calls ----------------------------------------------------------------------

    def visit_Call(self, node: cst.Call) -> bool:
        reason = self._skip_reason(node)
        if reason is None:
            return True
        rng = self._range(node)
        # Same line count, and each continuation line keeps its indentation.
        padding = "".join("\n" + _indent(self.lines[i]) for i in range(rng.start.line, rng.end.line))
        self.edits.append(
            _Edit(rng.start.line - 1, rng.start.column, rng.end.line - 1, rng.end.column,
                  f"{HELPER}.skipped({reason!r}{padding})")
        )
        self.neutralised.append(Neutralised(rng.start.line - 1, reason))
        return False  # nothing inside a removed call runs, so nothing inside needs edits

    def _skip_reason(self, node: cst.Call) -> str | None:
        callee = dotted_name(node.func)
        if callee in _SKIPPED_CALLS:
            return _SKIPPED_CALLS[callee]
        if isinstance(node.func, cst.Attribute) and node.func.attr.value == "step":
            receiver = dotted_name(node.func.value) or ""
            leaf = receiver.rsplit(".", 1)[-1]
            if receiver in self.optimizer_names or "optim" in leaf.lower() or "scaler" in leaf.lower():
                return "optimizer step (shapes never need it; Adam/AdamW raise on meta)"
        return None

    def _wrap(self, rng: CodeRange, before: str, after: str) -> None:
        start, end = rng.start, rng.end
        self.edits.append(_Edit(start.line - 1, start.column, start.line - 1, start.column, before))
        self.edits.append(_Edit(end.line - 1, end.column, end.line - 1, end.column, after))


def _indent(text: str) -> str:
    return text[: len(text) - len(text.lstrip())]


def _apply_edits(source: str, edits: list[_Edit]) -> str:
    if not edits:
        return source
    lines = source.splitlines(keepends=True)
    starts = [0]
    for text in lines:
        starts.append(starts[-1] + len(text))

    def offset(line: int, col: int) -> int:
        return starts[line] + col

    out = source
    # Apply from the end so earlier offsets stay valid; insertions at one point keep their order.
    for index, edit in sorted(enumerate(edits), key=lambda p: (p[1].line, p[1].col, p[0]), reverse=True):
        out = out[: offset(edit.line, edit.col)] + edit.text + out[offset(edit.end_line, edit.end_col):]
    return out
