from torch_lsp.analysis.check import analyze_source
from torch_lsp.analysis.facts import Severity
from torch_lsp.analysis.rules import all_rules, load_rules
from torch_lsp.analysis.rules.selection import RuleSelection, suppressed_codes
from tests.conftest import FIXTURES

SOURCE = (FIXTURES / "missing_zero_grad.py").read_text()


def codes(source: str, selection: RuleSelection) -> list[str]:
    return [f.code for f in analyze_source(source, "x.py", selection).findings]


def test_select_ignore_and_prefixes():
    assert "TL101" in codes(SOURCE, RuleSelection())
    assert "TL101" not in codes(SOURCE, RuleSelection(ignore=("TL101",)))
    assert "TL101" not in codes(SOURCE, RuleSelection(ignore=("TL1",)))
    assert "TL101" in codes(SOURCE, RuleSelection(select=("TL10",)))
    assert "TL101" not in codes(SOURCE, RuleSelection(select=("TL2",)))


def test_severity_override():
    findings = analyze_source(SOURCE, "x.py", RuleSelection(severity={"TL101": Severity.ERROR})).findings
    assert [f.severity for f in findings if f.code == "TL101"] == [Severity.ERROR]


def test_suppression_comments():
    assert suppressed_codes("x = 1  # torch-lsp: ignore") == set()
    assert suppressed_codes("x  # torch-lsp: ignore[TL101, TL102]") == {"TL101", "TL102"}
    assert suppressed_codes("x = 1  # an ordinary comment") is None
    silenced = SOURCE.replace("# expect: TL101", "# torch-lsp: ignore[TL101]")
    assert "TL101" not in codes(silenced, RuleSelection())
    other = SOURCE.replace("# expect: TL101", "# torch-lsp: ignore[TL999]")
    assert "TL101" in codes(other, RuleSelection())
    bare = SOURCE.replace("# expect: TL101", "# torch-lsp: ignore")
    assert "TL101" not in codes(bare, RuleSelection())


def test_every_rule_is_documented():
    load_rules()
    for rule in all_rules():
        assert rule.code.startswith("TL") and rule.name and rule.summary
        assert "## What it does" in rule.doc and "## Why is this bad?" in rule.doc, rule.code


def test_a_crashing_rule_fails_under_strict_mode_and_is_listed_otherwise(monkeypatch):
    import dataclasses

    import pytest

    from torch_lsp.analysis import check
    from torch_lsp.analysis.rules import load_rules

    rules = load_rules()
    code = next(code for code, rule in rules.items() if rule.check is not None)

    def broken(ctx):
        raise RuntimeError("rule bug")

    monkeypatch.setitem(rules, code, dataclasses.replace(rules[code], check=broken))
    with pytest.raises(RuntimeError, match="rule bug"):  # the suite runs strict (tests/conftest.py)
        check.analyze_source("import torch\n")
    monkeypatch.setenv("TORCH_LSP_STRICT_RULES", "0")
    analysis = check.analyze_source("import torch\n")
    assert analysis.crashed == [code] and analysis.ok
