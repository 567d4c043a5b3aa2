"""Which rules run, at what severity, and which findings a comment suppresses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from torch_lsp.analysis.facts import Finding, Severity
from torch_lsp.analysis.rules import Rule

_SUPPRESSION = re.compile(r"#\s*torch-lsp:\s*ignore(?:\[(?P<codes>[A-Za-z0-9_,\s]*)\])?")
# Selecting the whole family does not turn on rules that are off by default; naming them does.
_FAMILY_SELECTORS = {"ALL", "TL"}


@dataclass(frozen=True)
class RuleSelection:
    select: tuple[str, ...] = ("TL",)
    ignore: tuple[str, ...] = ()
    severity: dict[str, Severity] = field(default_factory=dict)

    def enabled(self, rule: Rule) -> bool:
        if _matches(rule.code, self.ignore):
            return False
        explicit = [s for s in self.select if s.upper() not in _FAMILY_SELECTORS]
        if _matches(rule.code, explicit):
            return True
        return rule.default_enabled and any(s.upper() in _FAMILY_SELECTORS for s in self.select)

    def severity_of(self, rule: Rule) -> Severity:
        return self.severity.get(rule.code, rule.severity)

    def apply(self, findings: list[Finding], rules: dict[str, Rule]) -> list[Finding]:
        """Drop findings of disabled rules and apply severity overrides."""
        kept = []
        enabled: dict[str, bool] = {}  # per code, not per finding: a large file has hundreds
        for finding in findings:
            rule = rules.get(finding.code)
            if rule is not None and finding.code not in enabled:
                enabled[finding.code] = self.enabled(rule)
            if rule is None or enabled[finding.code]:
                severity = self.severity_of(rule) if rule else finding.severity
                kept.append(finding if severity == finding.severity else replace(finding, severity=severity))
        return kept


def _matches(code: str, selectors: tuple[str, ...] | list[str]) -> bool:
    return any(s.upper() == "ALL" or code.startswith(s.upper()) for s in selectors)


def suppressed_codes(line_text: str) -> set[str] | None:
    """Codes suppressed on this line: None for none, an empty set for all (bare ignore)."""
    match = _SUPPRESSION.search(line_text)
    if match is None:
        return None
    codes = match.group("codes")
    if codes is None:
        return set()
    return {c.strip().upper() for c in codes.split(",") if c.strip()}


def is_suppressed(finding: Finding, lines: list[str]) -> bool:
    line = finding.span.start.line
    if not 0 <= line < len(lines):
        return False
    codes = suppressed_codes(lines[line])
    return codes is not None and (not codes or finding.code in codes)
