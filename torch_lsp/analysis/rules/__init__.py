"""The rule registry: every diagnostic code torch-lsp can report, with its metadata and docs.

A rule is a function `check(ctx) -> Iterable[Finding]` decorated with `@rule(...)` in one
module of this package (one module per rule family). Runtime rules (TL2xx shape errors found
by executing code) register metadata only: their findings come from the shape engine, but
they are selected, ignored, suppressed and documented the same way.

Incremental analysis (analysis/incremental.py) re-runs a rule marked `scope="statement"` on
the statements an edit can affect only, and keeps its other findings. A rule may be marked so
when each finding it makes is decided by the statement it reports in, by statements reached
from there by name (helpers, classes, module-level variables, callers), by `ctx.training`'s
bindings, and by the aggregates of analysis/file_facts.py: it enumerates its sites with
`nodes(ctx.parsed, ...)` / `ctx.loops` and reads file-wide aggregates from `file_facts`. Any
other rule keeps the default `scope="file"` and runs on the whole file every time.

Each rule's documentation is the docstring of its check function, in ruff's layout (What it
does / Why is this bad? / Example / Use instead / Fix); docs/rules.md is generated from it
(`python -m torch_lsp.analysis.rules.docs`), and a test keeps the two in sync.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from typing import Callable, Iterable

from torch_lsp.analysis.facts import Finding, Fix, Severity, Span
from torch_lsp.analysis.syntax import ParsedModule


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: Severity
    summary: str
    doc: str
    fixable: bool = False
    default_enabled: bool = True
    check: Callable[["RuleContext"], Iterable[Finding]] | None = None
    scope: str = "file"  # "statement": see the module docstring

    def finding(self, span: Span, message: str, fix: Fix | None = None, related=()) -> Finding:
        return Finding(self.code, message, span, self.severity, fix, tuple(related))


REGISTRY: dict[str, Rule] = {}


def _register(entry: Rule) -> Rule:
    if entry.code in REGISTRY:
        raise ValueError(f"rule code {entry.code} registered twice")
    REGISTRY[entry.code] = entry
    return entry


def rule(code: str, name: str, severity: Severity, summary: str, *, fixable: bool = False,
         default_enabled: bool = True, scope: str = "file"):
    """Register a static rule; the decorated function's docstring is its documentation."""

    def decorate(check):
        doc = inspect.cleandoc(check.__doc__ or "")
        _register(Rule(code, name, severity, summary, doc, fixable, default_enabled, check, scope))
        return check

    return decorate


def runtime_rule(code: str, name: str, severity: Severity, summary: str, doc: str, *, fixable: bool = False) -> Rule:
    """Register a code reported by the shape engine rather than by a static check."""
    return _register(Rule(code, name, severity, summary, inspect.cleandoc(doc), fixable))


class RuleContext:
    """What a rule may look at. Facts are computed on first use and shared by all rules.

    `parsed` may be a focused module (see the module docstring): `nodes(ctx.parsed, kind)`
    then lists the focused statements' nodes; `whole` is always the whole file."""

    def __init__(self, parsed: ParsedModule, path: str = "<buffer>"):
        self.parsed = parsed
        self.whole = parsed.whole
        self.path = path

    @functools.cached_property
    def training(self):
        from torch_lsp.analysis.training import training_facts

        return training_facts(self.parsed)

    @functools.cached_property
    def loops(self):
        """The training facts' loops that lie in the statements this run looks at."""
        loops = self.training.loops
        if self.parsed.focus_ranges is None:
            return loops
        start = self.whole.index.start
        return [loop for loop in loops
                if any(low <= start[id(loop.node)] <= high for low, high in self.parsed.focus_ranges)]


@functools.cache
def load_rules() -> dict[str, Rule]:
    """Import every rule module of this package once, and return the registry."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "docs":
            importlib.import_module(f"{__name__}.{info.name}")
    return REGISTRY


def all_rules() -> list[Rule]:
    return sorted(load_rules().values(), key=lambda r: r.code)
