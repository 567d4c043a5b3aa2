"""Every rule fixture in tests/rules/fixtures/, checked against the markers written in it.

A fixture named `TL1xx_<anything>.py` is analysed with only rule TL1xx selected. Lines marked
`# expect: TL1xx` must be reported, at that line; every other line must not be. Each quick fix
is applied and the file re-checked: that finding is gone and no new finding appears. Fixtures
whose first line is `# runnable` are executed (as written, and with every fix applied).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from torch_lsp.analysis.check import analyze_source
from torch_lsp.analysis.rules._edits import apply_edits
from torch_lsp.analysis.rules.selection import RuleSelection

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("TL*.py"))
EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>TL\d+(?:\s*,\s*TL\d+)*)")


def code_of(path: Path) -> str:
    return path.name.split("_", 1)[0]


def expected_lines(source: str, code: str) -> list[int]:
    lines = []
    for number, line in enumerate(source.splitlines()):
        match = EXPECT.search(line)
        if match and code in [c.strip() for c in match.group("codes").split(",")]:
            lines.append(number)
    return lines


def findings(source: str, code: str):
    analysis = analyze_source(source, "fixture.py", RuleSelection(select=(code,)))
    assert analysis.ok, analysis.failure
    return [f for f in analysis.findings if f.code == code]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_findings_match_markers(path: Path):
    source = path.read_text()
    code = code_of(path)
    assert sorted(f.span.start.line for f in findings(source, code)) == expected_lines(source, code)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_each_fix_removes_its_finding_and_adds_none(path: Path):
    source = path.read_text()
    code = code_of(path)
    before = findings(source, code)
    for finding in (f for f in before if f.fix is not None):
        fixed = apply_edits(source, finding.fix.edits)
        after = findings(fixed, code)
        assert len(after) == len(before) - 1, f"fix {finding.fix.title!r} left or added findings:\n{fixed}"
        everything_before = analyze_source(source, "f.py", RuleSelection(select=("TL",))).findings
        everything_after = analyze_source(fixed, "f.py", RuleSelection(select=("TL",))).findings
        assert {f.code for f in everything_after} <= {f.code for f in everything_before}


RUNNABLE = [p for p in FIXTURES if p.read_text().startswith("# runnable")]

# All runnable programs (as written and with every fix applied) run in ONE interpreter, each
# with runpy as `__main__`: starting a fresh interpreter per program costs seconds of torch import.
DRIVER = """
import json, runpy, sys, traceback
results = {}
for path in sys.argv[1:]:
    try:
        runpy.run_path(path, run_name="__main__")
        results[path] = None
    except BaseException:
        results[path] = traceback.format_exc()[-2000:]
print("RESULTS" + json.dumps(results))
"""


def fully_fixed(source: str, code: str) -> str:
    fixed = source
    while True:  # apply fixes one at a time: positions move after each
        fixable = [f for f in findings(fixed, code) if f.fix is not None]
        if not fixable:
            return fixed
        fixed = apply_edits(fixed, fixable[0].fix.edits)


@pytest.fixture(scope="module")
def program_results(tmp_path_factory) -> dict[str, str | None]:
    folder = tmp_path_factory.mktemp("runnable")
    scripts = []
    for path in RUNNABLE:
        source = path.read_text()
        for label, text in (("original", source), ("fixed", fully_fixed(source, code_of(path)))):
            script = folder / f"{label}_{path.name}"
            script.write_text(text)
            scripts.append(str(script))
    run = subprocess.run([sys.executable, "-c", DRIVER, *scripts], capture_output=True, text=True,
                         timeout=600, cwd=folder)
    marker = run.stdout.rfind("RESULTS")
    assert marker >= 0, f"driver failed:\n{run.stderr[-3000:]}"
    return {Path(k).name: v for k, v in json.loads(run.stdout[marker + len("RESULTS"):]).items()}


@pytest.mark.slow  # runs every runnable fixture for real, before and after its fixes
@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.name)
def test_runnable_fixture_runs_before_and_after_all_fixes(path: Path, program_results):
    for label in ("original", "fixed"):
        error = program_results[f"{label}_{path.name}"]
        assert error is None, f"{label} {path.name} failed:\n{error}"
