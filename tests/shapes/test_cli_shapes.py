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
