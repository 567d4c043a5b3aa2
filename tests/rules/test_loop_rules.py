"""Fixture tests for the loop-order and evaluation rules (TL102-TL106, TL110).

Each fixture `fixtures/<CODE>_*.py` marks the lines that must be reported with a trailing
`# expect: <CODE>`; every other line of the file must produce no finding of that code (the
must-not-flag cases of the issue live in the same files). Every quick fix is applied and the
result re-checked; fixtures with a `# fixture: runnable` line are executed before and after
all of their fixes are applied.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from torch_lsp.analysis.check import analyze_source
from torch_lsp.analysis.rules import load_rules
from torch_lsp.analysis.rules._edits import apply_edits
from torch_lsp.analysis.rules.selection import RuleSelection
from torch_lsp.analysis.syntax import ParseFailure, parse

CODES = ("TL102", "TL103", "TL104", "TL105", "TL106", "TL110")
FIXTURES = Path(__file__).parent / "fixtures"
_EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>TL\d+(?:\s*,\s*TL\d+)*)")
# Every registered rule, so that "no new finding" covers the other families too.
_ALL = RuleSelection(select=("ALL",))


def _fixtures() -> list[Path]:
    return sorted(p for code in CODES for p in FIXTURES.glob(f"{code}_*.py"))


def _code_of(path: Path) -> str:
    return path.name.split("_", 1)[0]


def _expected_lines(source: str, code: str) -> list[int]:
    lines = []
    for number, text in enumerate(source.splitlines()):
        match = _EXPECT.search(text)
        if match and code in {c.strip() for c in match.group("codes").split(",")}:
            lines.append(number)
    return lines


def _findings(source: str, path: Path, code: str | None = None):
    selection = RuleSelection(select=(code,)) if code else _ALL
    analysis = analyze_source(source, str(path), selection)
    assert analysis.ok, f"{path.name} does not parse: {analysis.failure}"
    return analysis.findings


def test_every_code_has_a_fixture_and_docs():
    rules = load_rules()
    for code in CODES:
        assert any(FIXTURES.glob(f"{code}_*.py")), f"no fixture for {code}"
        doc = rules[code].doc
        for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Fix"):
            assert heading in doc, f"{code} docstring lacks {heading!r}"
        assert "ignore[" in doc, f"{code} docstring does not say how to suppress it"


@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: p.name)
def test_fixture_findings_match_expectations(path: Path):
    source = path.read_text()
    code = _code_of(path)
    expected = _expected_lines(source, code)
    assert expected, f"{path.name} has no `# expect: {code}` line"
    reported = sorted(f.span.start.line for f in _findings(source, path, code))
    assert reported == expected, (
        f"{path.name}: reported on lines {[n + 1 for n in reported]}, expected {[n + 1 for n in expected]}"
    )


@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: p.name)
def test_each_fix_removes_its_finding_and_adds_none(path: Path):
    source = path.read_text()
    code = _code_of(path)
    before = _findings(source, path)
    fixable = [f for f in before if f.code == code and f.fix is not None]
    if not load_rules()[code].fixable:
        assert not fixable
        pytest.skip(f"{code} offers no fix")
    assert fixable, f"{path.name}: no {code} finding offers a fix"
    for finding in fixable:
        fixed = apply_edits(source, finding.fix.edits)
        assert not isinstance(parse(fixed), ParseFailure), f"fix {finding.fix.title!r} leaves invalid Python"
        after = _findings(fixed, path)
        expected = collections.Counter(f.code for f in before)
        expected[code] -= 1
        assert collections.Counter(f.code for f in after) == +expected, (
            f"fix {finding.fix.title!r} on line {finding.span.start.line + 1}: before "
            f"{[(f.code, f.span.start.line + 1) for f in before]}, after {[(f.code, f.span.start.line + 1) for f in after]}"
        )


def _apply_all_fixes(source: str, path: Path, code: str) -> str:
    """Apply the fixes of `code` one at a time, re-analysing after each (edits move lines)."""
    for _ in range(50):
        fixable = [f for f in _findings(source, path, code) if f.fix is not None]
        if not fixable:
            return source
        source = apply_edits(source, fixable[0].fix.edits)
    raise AssertionError("fixes do not converge")


_DRIVER = """
import contextlib, io, json, runpy, sys, traceback
results = {}
for path in sys.argv[1:]:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
        results[path] = {"ok": "ok" in out.getvalue().splitlines(), "log": out.getvalue()[-2000:]}
    except BaseException:
        results[path] = {"ok": False, "log": out.getvalue()[-2000:] + traceback.format_exc()[-4000:]}
print(json.dumps(results))
"""


def _runnable() -> list[Path]:
    return [p for p in _fixtures() if "# fixture: runnable" in p.read_text()]


@pytest.fixture(scope="module")
def run_results(tmp_path_factory) -> dict[str, dict]:
    """Run every runnable fixture, original and fixed, in ONE subprocess: importing torch
    costs seconds on a loaded machine, running the fixtures costs milliseconds."""
    folder = tmp_path_factory.mktemp("runs")
    scripts = {}
    for path in _runnable():
        source = path.read_text()
        for label, text in (("original", source), ("fixed", _apply_all_fixes(source, path, _code_of(path)))):
            script = folder / f"{label}_{path.name}"
            script.write_text(text)
            scripts[(label, path.name)] = str(script)
    result = subprocess.run([sys.executable, "-c", _DRIVER, *scripts.values()], capture_output=True, text=True,
                            timeout=300, cwd=folder)
    assert result.returncode == 0, result.stderr[-4000:]
    by_script = json.loads(result.stdout.splitlines()[-1])
    return {f"{label}:{name}": by_script[script] for (label, name), script in scripts.items()}


@pytest.mark.parametrize("path", _runnable(), ids=lambda p: p.name)
def test_runnable_fixture_runs_before_and_after_its_fixes(path: Path, run_results):
    for label in ("original", "fixed"):
        outcome = run_results[f"{label}:{path.name}"]
        assert outcome["ok"], f"{label} {path.name} failed:\n{outcome['log']}"
