"""The execution plan for the shape engine: which code runs, and what is neutralised.

Pure analysis on the shared `ast` parse of analysis/syntax.py (cached by text, so the plan costs
little beyond the static analysis of the same version; libcst measured ~2 ms a line here, too
slow for every keystroke): no torch, no LSP types. The plan is the document's own source with a
few *line-preserving* text edits, so that every line and column the worker records maps back
to the user's file without any translation table:

- training loops (a loop whose body calls ``.backward()`` or steps an optimizer, or that iterates
  a data loader) run their body once: ``for b in loader:`` becomes
  ``for b in __torch_lsp__.once((loader)):``; ``while c:`` becomes
  ``while __torch_lsp__.once_while(<line>) and (c):``;
- optimizer steps and ``torch.save`` are replaced by a no-op call of the same line count (shapes
  never need them; Adam on meta parameters even raises);
- ``torch.load(...)`` becomes ``__torch_lsp__.load(...)`` with the same arguments: a file of the
  workspace loads (``weights_only=True``) onto the job's device, anything else stands in empty;
- everything else (imports, definitions, module-level code and the ``__main__`` block) runs as
  written, under the worker's runtime guards (see docs/shapes.md).

The plan also lists, per statement, the names it binds, so the tracer records exactly the
variables a line assigns instead of diffing every local after every line.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from torch_lsp.analysis import node_index
from torch_lsp.analysis.facts import Span
from torch_lsp.analysis.syntax import ParsedModule, parse, target_key

HELPER = "__torch_lsp__"

# Calls whose effects never matter for shapes and that must not run: (dotted name, reason).
_SKIPPED_CALLS = {
    "torch.save": "torch.save writes a file",
    "torch.hub.load": "torch.hub.load downloads",
    "torch.hub.load_state_dict_from_url": "downloads weights",
}
# Calls redirected to a helper method of the same arguments: (dotted name) -> (method, reason).
_REDIRECTED_CALLS = {
    "torch.load": ("load", "torch.load: a workspace file loads onto the execution device (weights_only=True); "
                           "a missing one stands in empty"),
}
_TRAINING_METHODS = {"backward", "step", "zero_grad"}
# Names IPython puts in a notebook's namespace; outside IPython they do not exist. In a notebook
# (a plan for an `.ipynb` file) calls to them are left out unless the notebook binds the name.
_IPYTHON_BUILTINS = {"display", "get_ipython"}


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
        digest = hashlib.blake2b(digest_size=16)  # fast without OpenSSL too (cli._without_openssl)
        digest.update(self.filename.encode())
        digest.update(b"\0")
        digest.update(self.source.encode())
        return digest.hexdigest()

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


def build_plan(source: str, filename: str = "<document>", parsed: ParsedModule | None = None) -> ExecutionPlan:
    """Source text -> plan. A file that does not parse yields a plan with `error` set.
    `parsed`: the source's parse when the caller holds one (else the shared cached parse)."""
    parsed = parsed if parsed is not None else parse(source)
    if not isinstance(parsed, ParsedModule):
        return ExecutionPlan(filename, "", error=f"syntax error: {parsed.message} (line {parsed.line + 1})")
    collector = _PlanCollector(parsed, notebook=filename.endswith(".ipynb"))
    collector.collect()
    return ExecutionPlan(
        filename=filename,
        source=_apply_edits(source, collector.edits),
        statements=tuple(sorted(collector.statements, key=lambda s: (s.line, s.end_line))),
        neutralised=tuple(sorted(collector.neutralised, key=lambda n: n.line)),
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


_SIMPLE_STATEMENTS = (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Expr, ast.Return, ast.Delete, ast.Pass,
                      ast.Raise, ast.Assert, ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.Break,
                      ast.Continue)
_COLLECTED = (*_SIMPLE_STATEMENTS, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Call)


def _bound_names(target: ast.AST) -> list[str]:
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _bound_names(element)]
    if isinstance(target, ast.Starred):
        return _bound_names(target.value)
    name = target_key(target)
    # `self.pe = ...` is worth showing; `a.b.c = ...` rarely is and costs a getattr chain.
    if name is not None and name.count(".") <= 1:
        return [name]
    return []


class _PlanCollector:
    def __init__(self, parsed: ParsedModule, notebook: bool = False) -> None:
        self.parsed = parsed
        self.ipython_names = _IPYTHON_BUILTINS - _bound_anywhere(parsed) if notebook else set()
        self.edits: list[_Edit] = []
        self.statements: list[Statement] = []
        self.neutralised: list[Neutralised] = []
        self.run_once_loops: set[tuple[int, int]] = set()
        self.loader_names: set[str] = set()
        self.optimizer_names: set[str] = set()

    def collect(self) -> None:
        # The parse's node index, not ast.walk: a walk of a 5,000-line module costs ~30 ms, and
        # a plan is built for every version that gets a shape job. Source order puts an
        # enclosing call before the calls inside it, as the walk did (`skipped`).
        for node in node_index.nodes(self.parsed, ast.Assign):  # first the names, so a loop
            self._remember_kinds(node)  # before its loader's binding still counts
        skipped: list[Span] = []
        for node in node_index.nodes(self.parsed, _COLLECTED):
            if isinstance(node, _SIMPLE_STATEMENTS):
                self._statement(node, self._binds(node))
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                self._statement(node, _bound_names(node.target), header_end=node.iter)
                if self._is_training_loop(node, node.iter):
                    self._wrap(node.iter, f"{HELPER}.once((", "))")
                    self.run_once_loops.add(self._line_range(node))
            elif isinstance(node, ast.While):
                self._statement(node, [], header_end=node.test)
                if self._is_training_loop(node, None):
                    line = node.lineno - 1
                    self._wrap(node.test, f"{HELPER}.once_while({line}) and (", ")")
                    self.run_once_loops.add(self._line_range(node))
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                binds = [n for item in node.items if item.optional_vars is not None for n in _bound_names(item.optional_vars)]
                self._statement(node, binds, header_end=node.items[-1].context_expr)
            elif isinstance(node, ast.Call):
                self._maybe_skip(node, skipped)

    # statements -----------------------------------------------------------------------------

    def _statement(self, node: ast.AST, binds: list[str], header_end: ast.AST | None = None) -> None:
        end = (header_end or node).end_lineno
        self.statements.append(Statement(node.lineno - 1, end - 1, tuple(dict.fromkeys(binds))))

    @staticmethod
    def _binds(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Assign):
            return [name for target in node.targets for name in _bound_names(target)]
        if isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
            return _bound_names(node.target)
        return []

    def _line_range(self, node: ast.AST) -> tuple[int, int]:
        return node.lineno - 1, node.end_lineno - 1

    def _remember_kinds(self, node: ast.Assign) -> None:
        """Names bound to DataLoaders / optimizers, so loops over them and their steps are known."""
        if not isinstance(node.value, ast.Call):
            return
        callee = self.parsed.qualified_name(node.value.func) or ""
        names = [n for target in node.targets for n in _bound_names(target)]
        if callee.endswith("DataLoader"):
            self.loader_names.update(names)
        elif (callee.startswith("torch.optim.") and ".lr_scheduler." not in callee) or callee.endswith("GradScaler"):
            self.optimizer_names.update(names)

    # loops ----------------------------------------------------------------------------------

    def _is_training_loop(self, loop: ast.AST, iterable: ast.AST | None) -> bool:
        if iterable is not None and self._iterates_loader(iterable):
            return True
        for statement in loop.body:
            for node in node_index.nodes(self.parsed, (ast.Call, ast.For, ast.AsyncFor), statement):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in _TRAINING_METHODS:
                    return True
                if isinstance(node, (ast.For, ast.AsyncFor)) and self._iterates_loader(node.iter):
                    return True
        return False

    def _iterates_loader(self, iterable: ast.AST) -> bool:
        names = {n.id for n in ast.walk(iterable) if isinstance(n, ast.Name)}
        names |= {a.attr for a in ast.walk(iterable) if isinstance(a, ast.Attribute)}
        return any("loader" in n.lower() or n in self.loader_names for n in names)

    # neutralised calls ----------------------------------------------------------------------

    def _maybe_skip(self, node: ast.Call, skipped: list[Span]) -> None:
        redirect = _REDIRECTED_CALLS.get(self.parsed.qualified_name(node.func) or "")
        if redirect is not None:
            span = self.parsed.span(node.func)
            if not _inside_last(span, skipped):
                self.edits.append(_Edit(span.start.line, span.start.col, span.end.line, span.end.col,
                                        f"{HELPER}.{redirect[0]}"))
                self.neutralised.append(Neutralised(span.start.line, redirect[1]))
            return
        reason = self._skip_reason(node)
        if reason is None:
            return
        span = self.parsed.span(node)
        if _inside_last(span, skipped):
            return  # inside a call that is already removed
        skipped.append(span)
        lines = self.parsed.lines
        # Same line count, and each continuation line keeps its indentation.
        padding = "".join("\n" + _indent(lines[i + 1]) for i in range(span.start.line, span.end.line))
        self.edits.append(_Edit(span.start.line, span.start.col, span.end.line, span.end.col,
                                f"{HELPER}.skipped({reason!r}{padding})"))
        self.neutralised.append(Neutralised(span.start.line, reason))

    def _skip_reason(self, node: ast.Call) -> str | None:
        if self.ipython_names and _root_name(node.func) in self.ipython_names:
            return "IPython only (display, get_ipython): not there outside a notebook kernel"
        callee = self.parsed.qualified_name(node.func)
        if callee in _SKIPPED_CALLS:
            return _SKIPPED_CALLS[callee]
        if isinstance(node.func, ast.Attribute) and node.func.attr == "step":
            receiver = target_key(node.func.value) or ""
            leaf = receiver.rsplit(".", 1)[-1]
            if receiver in self.optimizer_names or "optim" in leaf.lower() or "scaler" in leaf.lower():
                return "optimizer step (shapes never need it; Adam/AdamW raise on meta)"
        return None

    def _wrap(self, node: ast.AST, before: str, after: str) -> None:
        span = self.parsed.span(node)
        self.edits.append(_Edit(span.start.line, span.start.col, span.start.line, span.start.col, before))
        self.edits.append(_Edit(span.end.line, span.end.col, span.end.line, span.end.col, after))


def _inside_last(span: Span, skipped: list[Span]) -> bool:
    """Whether `span` lies in a call already removed. Calls come in source order, so one that
    encloses `span` is the last removed: every call between them lies inside it too, and a call
    inside a removed one is never removed itself."""
    return bool(skipped) and skipped[-1].start <= span.start and span.end <= skipped[-1].end


def _root_name(func: ast.AST) -> str | None:
    """`display` for `display(...)`, `get_ipython` for `get_ipython().run_line_magic(...)`."""
    while isinstance(func, (ast.Attribute, ast.Call)):
        func = func.value if isinstance(func, ast.Attribute) else func.func
    return func.id if isinstance(func, ast.Name) else None


def _bound_anywhere(parsed: ParsedModule) -> set[str]:
    names = set(parsed.imports)
    for node in node_index.nodes(parsed, (ast.Name, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def _indent(text: str) -> str:
    return text[: len(text) - len(text.lstrip())]


def _apply_edits(source: str, edits: list[_Edit]) -> str:
    if not edits:
        return source
    lines = source.splitlines(keepends=True)
    starts = [0]
    for text in lines:
        starts.append(starts[-1] + len(text))
    # One pass from the start (slicing the whole text once per edit was quadratic); insertions
    # at one point keep their order, and the edits never overlap.
    pieces, done = [], 0
    for _, edit in sorted(enumerate(edits), key=lambda p: (p[1].line, p[1].col, p[0])):
        start = starts[edit.line] + edit.col
        pieces += [source[done:start], edit.text]
        done = max(done, starts[edit.end_line] + edit.end_col)
    pieces.append(source[done:])
    return "".join(pieces)
