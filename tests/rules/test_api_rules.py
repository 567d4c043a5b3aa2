"""Fixture-driven tests for the API-use, security and deprecation rules.

Each fixture `fixtures/<CODE>_*.py` marks the lines a rule must flag with a trailing
`# expect: <CODE>`; every other line of the file must produce no finding of that code (the
must-not-flag cases live in the same files). Fixture header comments:
`# fixture: runnable` (the fixed program is executed) and `# torch-version: X.Y` (the rule
behaves as if that torch were installed).
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import pytest

from torch_lsp.analysis.check import analyze_source
from torch_lsp.analysis.rules import all_rules
from torch_lsp.analysis.rules import security
from torch_lsp.analysis.rules._edits import apply_edits
from torch_lsp.analysis.rules.selection import RuleSelection
from torch_lsp.analysis.syntax import parse, ParsedModule

FIXTURES = Path(__file__).parent / "fixtures"
# The rule modules this file covers; the codes come from the registry, not from a list here.
RULE_MODULES = {"api_use", "losses", "loaders", "security", "deprecations", "reproducibility"}
CODES = sorted(r.code for r in all_rules() if r.check and r.check.__module__.rsplit(".", 1)[-1] in RULE_MODULES)
EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>TL\d+(?:\s*,\s*TL\d+)*)")
TORCH_VERSION = re.compile(r"^#\s*torch-version:\s*(\d+)\.(\d+)", re.MULTILINE)


def fixtures_for(codes=CODES):
    return sorted(p for p in FIXTURES.glob("TL*.py") if p.name.split("_")[0] in codes)


def expected_lines(source: str, code: str) -> set[int]:
    lines = set()
    for number, line in enumerate(source.splitlines()):
        match = EXPECT.search(line)
        if match and code in [c.strip() for c in match.group("codes").split(",")]:
            lines.add(number)
    return lines


@pytest.fixture
def as_installed_torch(monkeypatch):
    """Makes TL301 see the torch version a fixture asks for."""

    def apply(source: str):
        match = TORCH_VERSION.search(source)
        if match:
            version = (int(match.group(1)), int(match.group(2)))
            monkeypatch.setattr(security, "installed_torch_version", lambda: version)

    return apply


def findings(source: str, code: str):
    analysis = analyze_source(source, "fixture.py", RuleSelection(select=(code,)))
    assert analysis.ok, analysis.failure
    return analysis.findings


def test_every_rule_has_a_fixture_and_documentation():
    assert CODES, "no rules found in the covered modules"
    for code in CODES:
        assert fixtures_for((code,)), f"{code} has no fixture"
    for rule in all_rules():
        if rule.code in CODES:
            for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Fix"):
                assert heading in rule.doc, f"{rule.code} docstring lacks {heading!r}"


@pytest.mark.parametrize("path", fixtures_for(), ids=lambda p: p.name)
def test_fixture_findings_match_markers(path, as_installed_torch):
    code = path.name.split("_")[0]
    source = path.read_text()
    as_installed_torch(source)
    found = collections.Counter(f.span.start.line for f in findings(source, code))
    expected = expected_lines(source, code)
    assert set(found) == expected, (
        f"{code}: flagged lines {sorted(n + 1 for n in found)}, expected {sorted(n + 1 for n in expected)}")
    assert all(count == 1 for count in found.values()), f"duplicate findings: {found}"


def _all_codes_counter(source: str):
    analysis = analyze_source(source, "fixture.py", RuleSelection(select=tuple(CODES)))
    assert analysis.ok, f"the fixed file does not parse: {analysis.failure}"
    return collections.Counter(f.code for f in analysis.findings)


def apply_each_fix(source: str, code: str) -> tuple[str, int]:
    """Apply the first fixable finding, re-check, repeat: each fix must remove exactly its own
    finding and add none (of any covered rule). Returns the fixed source and the fix count."""
    applied = 0
    for _ in range(50):
        fixable = [f for f in findings(source, code) if f.fix is not None]
        if not fixable:
            return source, applied
        before = _all_codes_counter(source)
        fixed = apply_edits(source, fixable[0].fix.edits)
        after = _all_codes_counter(fixed)
        expected = before.copy()
        expected[code] -= 1
        assert after == +expected, f"fix {fixable[0].fix.title!r} changed findings {dict(before)} -> {dict(after)}"
        source = fixed
        applied += 1
    raise AssertionError("fixes do not converge")


@pytest.mark.parametrize("path", [p for p in fixtures_for() if p.name.split("_")[0] in
                                  {r.code for r in all_rules() if r.fixable}], ids=lambda p: p.name)
def test_each_fix_removes_its_finding_and_adds_none(path, as_installed_torch):
    code = path.name.split("_")[0]
    source = path.read_text()
    as_installed_torch(source)
    fixed, _ = apply_each_fix(source, code)
    assert isinstance(parse(fixed), ParsedModule)


@pytest.mark.parametrize("code", [r.code for r in all_rules() if r.fixable and r.code in CODES])
def test_every_fixable_rule_offers_a_fix_in_its_fixtures(code, as_installed_torch):
    offered = 0
    for path in fixtures_for((code,)):
        source = path.read_text()
        as_installed_torch(source)
        offered += sum(f.fix is not None for f in findings(source, code))
    assert offered, f"{code} is registered as fixable but no fixture finding offers a fix"


RUNNABLE = [p for p in fixtures_for() if "# fixture: runnable" in p.read_text()]
# One interpreter runs every fixed fixture (each as __main__, in its own namespace): importing
# torch once instead of once per file keeps this test at a few seconds.
_RUN_ALL = """
import runpy, sys, traceback
failed = []
for path in sys.argv[1:]:
    try:
        runpy.run_path(path, run_name="__main__")
    except BaseException:
        failed.append(path)
        traceback.print_exc()
sys.exit(f"failed: {failed}" if failed else 0)
"""


@pytest.mark.slow
def test_fixed_runnable_fixtures_still_run(tmp_path, monkeypatch):
    assert RUNNABLE
    scripts = []
    for path in RUNNABLE:
        code = path.name.split("_")[0]
        source = path.read_text()
        with monkeypatch.context() as patch:
            match = TORCH_VERSION.search(source)
            if match:
                patch.setattr(security, "installed_torch_version", lambda: (int(match[1]), int(match[2])))
            fixed, _ = apply_each_fix(source, code)
        script = tmp_path / path.name
        script.write_text(fixed)
        scripts.append(str(script))
    result = subprocess.run([sys.executable, "-c", _RUN_ALL, *scripts], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]


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
    assert re.match(r"\(\d+, \d+\)", result.stdout.strip())


def test_tl120_is_off_by_default_and_suppressible():
    source = (FIXTURES / "TL120_unseeded.py").read_text()
    assert not [f for f in analyze_source(source).findings if f.code == "TL120"]
    suppressed = source.replace("# expect: TL120", "# torch-lsp: ignore[TL120]")
    assert findings(suppressed, "TL120") == []


@pytest.mark.parametrize("code", CODES)
def test_rules_survive_bad_input(code):
    for source in ("", "x = (", "def f(:\n", "torch.load(\n", "import torch\ntorch.load(*a, **k)\n",
                   "from torch.utils.data import DataLoader\nDataLoader()\n", "x.require_grad = 1\n",
                   "class A(nn.Module):\n  def forward(self): return self(self)\n"):
        analysis = analyze_source(source, "bad.py", RuleSelection(select=(code,)))
        assert analysis.ok or analysis.failure is not None
