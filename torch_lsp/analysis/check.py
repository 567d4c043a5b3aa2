"""The static analysis entry point: source text in, findings out. No LSP, no torch."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from torch_lsp.analysis.facts import Finding
from torch_lsp.analysis.rules import RuleContext, load_rules
from torch_lsp.analysis.rules.selection import RuleSelection, is_suppressed
from torch_lsp.analysis.syntax import ParsedModule, ParseFailure, parse, without_cyclic_gc
from torch_lsp.yield_points import yield_point

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    source: str
    parsed: ParsedModule | None
    failure: ParseFailure | None = None
    findings: list[Finding] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)  # codes of rules that raised

    @property
    def ok(self) -> bool:
        return self.parsed is not None


def analyze_source(source: str, path: str = "<buffer>", selection: RuleSelection | None = None) -> Analysis:
    """Run every enabled static rule over `source`.

    A rule that raises is logged, listed in `crashed` and skipped: one broken rule must not hide
    the others' findings from a user. Under `TORCH_LSP_STRICT_RULES=1` (the test suite sets it)
    it raises instead, so a crashing rule fails its test.
    """
    with without_cyclic_gc():
        return _analyze(source, path, selection or RuleSelection())


def _analyze(source: str, path: str, selection: RuleSelection) -> Analysis:
    parsed = parse(source)
    if isinstance(parsed, ParseFailure):
        return Analysis(source, None, parsed)
    rules = load_rules()
    ctx = RuleContext(parsed, path)
    findings: list[Finding] = []
    crashed: list[str] = []
    strict = os.environ.get("TORCH_LSP_STRICT_RULES") == "1"
    for rule in rules.values():
        if rule.check is None or not selection.enabled(rule):
            continue
        yield_point()  # in the server: a message waiting for the event loop goes first
        try:
            findings.extend(rule.check(ctx))
        except Exception:  # noqa: BLE001 - isolate rule bugs from the user
            if strict:
                raise
            log.exception("rule %s failed on %s", rule.code, path)
            crashed.append(rule.code)
    return finish(source, parsed, findings, selection, crashed)


def finish(source: str, parsed: ParsedModule, findings: list[Finding], selection: RuleSelection,
           crashed: list[str] | None = None) -> Analysis:
    """Rules' raw findings -> the analysis: selection and severities applied, suppressed ones
    dropped, in source order (also used by analysis/incremental.py)."""
    findings = [f for f in selection.apply(findings, load_rules()) if not is_suppressed(f, parsed.lines)]
    findings.sort(key=lambda f: (f.span.start.line, f.span.start.col, f.code))  # ints: Position's order, faster
    return Analysis(source, parsed, None, findings, list(crashed or ()))
