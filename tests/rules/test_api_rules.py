"""API-use, security and deprecation rules: what the generic fixture test (test_fixtures.py)
does not cover.

- Fixtures under `fixtures/torch_<major>_<minor>/` are checked as if that torch were installed
  (TL301 applies torch.load's default of the installed version).
- Every fix of every covered rule is applied one after another, each re-checked against all
  covered rules: exactly its own finding disappears and nothing else changes.
- Documentation headings, off-by-default, suppression, bad input.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rules.test_fixtures import expected_lines, findings
from torch_lsp.analysis.check import analyze_source
from torch_lsp.analysis.rules import all_rules, security
from torch_lsp.analysis.rules._edits import apply_edits
from torch_lsp.analysis.rules.selection import RuleSelection

FIXTURES = Path(__file__).parent / "fixtures"
# The rule modules this file covers; the codes come from the registry, not from a list here.
RULE_MODULES = {"api_use", "losses", "loaders", "security", "deprecations", "reproducibility"}
CODES = tuple(sorted(r.code for r in all_rules() if r.check and r.check.__module__.rsplit(".", 1)[-1] in RULE_MODULES))
VERSIONED = sorted(FIXTURES.glob("torch_*_*/TL*.py"))


def code_of(path: Path) -> str:
    return path.name.split("_", 1)[0]


def fixtures_of(code: str) -> list[Path]:
    return [p for p in (*FIXTURES.glob("TL*.py"), *VERSIONED) if code_of(p) == code]


@pytest.fixture
def torch_of_fixture(monkeypatch):
    """Makes TL301 see the torch version a versioned fixture's folder names."""

    def apply(path: Path):
        match = re.fullmatch(r"torch_(\d+)_(\d+)", path.parent.name)
        if match:
            version = (int(match[1]), int(match[2]))
            monkeypatch.setattr(security, "installed_torch_version", lambda: version)

    return apply


def counts(source: str) -> collections.Counter:
    analysis = analyze_source(source, "fixture.py", RuleSelection(select=CODES))
    assert analysis.ok, f"the file does not parse: {analysis.failure}"
    return collections.Counter(f.code for f in analysis.findings)


def apply_fixes_one_by_one(source: str, code: str) -> tuple[str, int]:
    """Apply the first fixable finding, re-check, repeat. Each fix must remove exactly its own
    finding and change no other count. Returns the fixed source and how many fixes applied."""
    applied = 0
    while applied < 50:
        fixable = [f for f in findings(source, code) if f.fix is not None]
        if not fixable:
            return source, applied
        before = counts(source)
        fixed = apply_edits(source, fixable[0].fix.edits)
        expected = before.copy()
        expected[code] -= 1
        after = counts(fixed)
        assert after == +expected, f"{fixable[0].fix.title!r}: {dict(before)} -> {dict(after)}\n{fixed}"
        source, applied = fixed, applied + 1
    raise AssertionError("fixes do not converge")


def test_covered_rules_are_registered_and_documented():
    assert set(CODES) == {"TL107", "TL108", "TL109", "TL111", "TL112", "TL120", "TL301", "TL302"}
    for rule in all_rules():
        if rule.code in CODES:
            assert fixtures_of(rule.code), f"{rule.code} has no fixture"
            for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Fix"):
                assert heading in rule.doc, f"{rule.code} docstring lacks {heading!r}"
            assert f"ignore[{rule.code}]" in rule.doc, f"{rule.code} docs do not say how to suppress it"


@pytest.mark.parametrize("path", VERSIONED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_versioned_fixture_findings_match_markers(path, torch_of_fixture):
    torch_of_fixture(path)
    source = path.read_text()
    code = code_of(path)
    assert sorted(f.span.start.line for f in findings(source, code)) == expected_lines(source, code)


@pytest.mark.parametrize("path", [p for c in CODES for p in fixtures_of(c)], ids=lambda p: p.name)
def test_fixes_applied_in_sequence_change_only_their_finding(path, torch_of_fixture):
    torch_of_fixture(path)
    apply_fixes_one_by_one(path.read_text(), code_of(path))


@pytest.mark.parametrize("code", [c for c in CODES if next(r for r in all_rules() if r.code == c).fixable])
def test_every_fixable_rule_offers_a_fix_in_its_fixtures(code, torch_of_fixture):
    offered = 0
    for path in fixtures_of(code):
        torch_of_fixture(path)
        offered += sum(f.fix is not None for f in findings(path.read_text(), code))
    assert offered, f"{code} is registered as fixable but no fixture finding offers a fix"


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in VERSIONED if p.read_text().startswith("# runnable")],
                         ids=lambda p: p.name)
def test_fixed_versioned_fixture_runs(path, tmp_path, torch_of_fixture):
    torch_of_fixture(path)
    fixed, applied = apply_fixes_one_by_one(path.read_text(), code_of(path))
    assert applied
    script = tmp_path / path.name
    script.write_text(fixed)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_tl301_follows_the_installed_torch_default(monkeypatch):
    source = "import torch\nstate = torch.load('model.pt')\n"
    monkeypatch.setattr(security, "installed_torch_version", lambda: (2, 5))
    old = findings(source, "TL301")
    assert len(old) == 1 and "2.5" in old[0].message and "2.6" in old[0].message
    monkeypatch.setattr(security, "installed_torch_version", lambda: (2, 6))
    assert findings(source, "TL301") == []
    monkeypatch.setattr(security, "installed_torch_version", lambda: None)  # unknown: assume the unsafe default
    assert len(findings(source, "TL301")) == 1


def test_installed_torch_version_is_read_without_importing_torch():
    code = ("import sys; from torch_lsp.analysis.rules.security import installed_torch_version as v; "
            "print(v()); assert 'torch' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\(\d+, \d+\)", result.stdout.strip())


def test_tl120_is_off_by_default_and_suppressible():
    source = (FIXTURES / "TL120_unseeded.py").read_text()
    assert not [f for f in analyze_source(source).findings if f.code == "TL120"]
    suppressed = source.replace("# expect: TL120", "# torch-lsp: ignore[TL120]")
    assert findings(suppressed, "TL120") == []


def test_deprecation_table_entries_are_complete():
    from torch_lsp.analysis.rules.deprecations import deprecation_table

    table = deprecation_table()
    assert "torch.cuda.amp.autocast" in table.calls and any(k.keyword == "pretrained" for k in table.keywords)
    for entry in (*table.calls.values(), *table.keywords):
        assert entry.since and (entry.replacement or entry.hint), entry


@pytest.mark.parametrize("code", CODES)
def test_rules_survive_bad_input(code):
    for source in ("", "x = (", "def f(:\n", "torch.load(\n", "import torch\ntorch.load(*a, **k)\n",
                   "from torch.utils.data import DataLoader\nDataLoader()\n", "x.require_grad = 1\n",
                   "from torch import nn\nclass A(nn.Module):\n  def forward(self): return self(self)\n",
                   "import torch\nwith torch.no_grad():\n  pass\n", "import torch.nn as nn\nnn.CrossEntropyLoss()()\n"):
        analysis = analyze_source(source, "bad.py", RuleSelection(select=(code,)))
        assert analysis.ok or analysis.failure is not None
