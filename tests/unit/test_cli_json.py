"""Every JSON output of the command line against its schema in docs/cli.md, and one line base
(1-based) everywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from tests.conftest import FIXTURES, ROOT
from tests.json_schemas import schemas, validate
from tests.training.helpers import copy_recorded_runs
from torch_lsp.cli_json import one_based, shape_report_json
from torch_lsp.shapes.report import ExpressionShapes, Range, ShapeError, ShapeReport, Value, VariableShapes


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "torch_lsp", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=240)


def test_every_json_output_has_a_documented_schema():
    assert set(schemas()) == {"check", "shapes", "summary", "runs", "metrics"}
    for schema in schemas().values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_check_json(tmp_path):
    (tmp_path / "broken.py").write_text("def f(:\n")
    result = run("check", "--no-shapes", "--format", "json", str(FIXTURES / "missing_zero_grad.py"),
                 str(tmp_path / "broken.py"), str(tmp_path / "missing.py"))
    findings = json.loads(result.stdout)
    validate("check", findings)
    assert {f["code"] for f in findings} == {"TL101", "TL001"}
    assert any(f["fix"] for f in findings)
    with pytest.raises(jsonschema.ValidationError):  # the schema does reject a 0-based line
        validate("check", [{**findings[0], "line": 0}])


def test_runs_json(tmp_path):
    ids = copy_recorded_runs(tmp_path / ".torch-lsp" / "runs")
    listed = json.loads(run("runs", "--json", cwd=tmp_path).stdout)
    validate("runs", listed)
    assert sorted(row["id"] for row in listed) == ids


@pytest.mark.slow  # each `metrics` draws the run's chart first (a matplotlib helper): 7-9 s a run on 2 busy cores
def test_metrics_json(tmp_path):
    ids = copy_recorded_runs(tmp_path / ".torch-lsp" / "runs")
    for run_id in ids:  # a completed run, a crash, a run stopped by --max-steps
        summary = json.loads(run("metrics", "--json", run_id, cwd=tmp_path).stdout)
        validate("metrics", summary)
    assert summary["error"] is None or summary["error"]["line"] >= 1


def test_shape_reports_are_converted_to_1_based_lines_and_columns():
    where = Range(line=0, col=4, end_line=0, end_col=9)
    report = ShapeReport(
        variables=[VariableShapes(name="x", line=2, end_line=3, values=[Value(kind="tensor", shape=(8, 3), dtype="float32")])],
        expressions=[ExpressionShapes(range=where, values=[Value(kind="tensor", shape=(8,), dtype="float32")])],
        errors=[ShapeError(code="TL201", message="m", range=where)], stopped="s", stopped_line=5)
    data = shape_report_json(report)
    validate("shapes", data)
    assert (data["variables"][0]["line"], data["variables"][0]["end_line"]) == (3, 4)
    assert data["expressions"][0]["range"] == {"line": 1, "col": 5, "end_line": 1, "end_col": 10}
    assert data["errors"][0]["range"]["line"] == 1 and data["stopped_line"] == 6
    assert data["variables"][0]["values"][0]["shape"] == [8, 3]  # sizes are not positions
    assert one_based({"origin": {"line": 0}, "notes": [{"line": None}], "timed_out": False}) == {
        "origin": {"line": 1}, "notes": [{"line": None}], "timed_out": False}


@pytest.mark.slow
def test_shapes_and_summary_json():
    broken = run("shapes", "--format", "json", str(FIXTURES / "shapes" / "lenet_broken.py"))
    assert broken.returncode == 1, broken.stderr
    validate("shapes", json.loads(broken.stdout))
    summary = run("summary", "--format", "json", str(FIXTURES / "shapes" / "lenet_ok.py"))
    assert summary.returncode == 0, summary.stderr
    validate("summary", json.loads(summary.stdout))


@pytest.mark.slow
def test_shapes_json_lines_are_1_based_like_the_text():
    path = FIXTURES / "shapes" / "lenet_ok.py"
    report = json.loads(run("shapes", "--format", "json", str(path)).stdout)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("images = "))
    assert [v["line"] for v in report["variables"] if v["name"] == "images"] == [line]
