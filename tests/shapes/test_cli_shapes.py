"""`torch-lsp shapes FILE` and the shape half of `torch-lsp check`, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES, ROOT
from tests.shapes.fixture_harness import expectation, run_fixture

pytestmark = pytest.mark.slow  # each command starts a shape worker (imports torch)

BROKEN = FIXTURES / "shapes" / "script_linear_broken.py"
OK = FIXTURES / "shapes" / "script_linear_ok.py"


def torch_lsp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch_lsp", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=240)


def test_shapes_prints_the_annotated_file_and_fails_on_a_shape_error():
    result = torch_lsp("shapes", str(BROKEN))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    stated = expectation(BROKEN)
    assert lines[stated.line - 1].startswith(BROKEN.read_text().splitlines()[stated.line - 1])
    assert lines[stated.line].lstrip().startswith(f"# ^ error {stated.code}") and stated.message in lines[stated.line]

    ok = torch_lsp("shapes", "--format", "json", str(OK))
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    cpu = run_fixture(OK, "cpu").globals
    for variable in report["variables"]:
        if variable["name"] in cpu and hasattr(cpu[variable["name"]], "shape"):
            assert tuple(variable["values"][-1]["shape"]) == tuple(cpu[variable["name"]].shape)
    assert report["variables"]


def test_check_reports_shape_errors_with_static_ones_and_no_shapes_skips_them():
    result = torch_lsp("check", "--format", "json", str(BROKEN), str(OK))
    assert result.returncode == 1, result.stderr
    found = json.loads(result.stdout)
    stated = expectation(BROKEN)
    assert [(f["path"], f["code"], f["line"]) for f in found] == [(str(BROKEN), stated.code, stated.line)]
    skipped = torch_lsp("check", "--no-shapes", "--format", "json", str(BROKEN))
    assert skipped.returncode == 0 and json.loads(skipped.stdout) == []


# (A required argparse option no longer stops the analysis: it is filled in, with a note.)
NEEDS_AN_OPTION = '''import sys

import torch

x = torch.zeros(2, 3)
if len(sys.argv) < 2:
    sys.exit(2)
'''

DOWNLOADS = '''import urllib.request

import torch

x = torch.zeros(2)
urllib.request.urlretrieve("https://example.com/weights.pt", "weights.pt")
'''


def test_check_prints_and_counts_early_stops(tmp_path):
    (tmp_path / "needs_an_option.py").write_text(NEEDS_AN_OPTION)
    (tmp_path / "downloads.py").write_text(DOWNLOADS)
    result = subprocess.run([sys.executable, "-m", "torch_lsp", "check", "needs_an_option.py", "downloads.py"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr  # information only: --fail-on error passes...
    lines = result.stdout.splitlines()
    assert lines[0].startswith("needs_an_option.py:7:5: TL299 the script called sys.exit(2) at line 7")
    assert lines[1].startswith("downloads.py:6:1: TL299 network access is not run during shape analysis")
    assert lines[2] == "Found 2 findings: 2 info."  # ...but never "All checks passed."
    strict = subprocess.run([sys.executable, "-m", "torch_lsp", "check", "--fail-on", "info", "--format", "json",
                             "needs_an_option.py"], capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert strict.returncode == 1
    [stop] = json.loads(strict.stdout)
    assert (stop["code"], stop["severity"], stop["line"], stop["column"]) == ("TL299", "info", 7, 5)


def test_a_script_that_exits_with_success_at_its_end_is_fully_analysed(tmp_path):
    (tmp_path / "main.py").write_text("import sys\nimport torch\n\n\ndef main():\n    x = torch.zeros(2)\n"
                                      "    return 0\n\n\nif __name__ == '__main__':\n    sys.exit(main())\n")
    result = subprocess.run([sys.executable, "-m", "torch_lsp", "check", "main.py"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert result.stdout == "All checks passed.\n"
