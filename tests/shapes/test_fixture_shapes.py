"""Each correct fixture (fixtures/shapes/*_ok.py): every module-level tensor the engine records
has the shape that real CPU execution of the same file gives; each broken fixture's error is at
the stated line with the failing expression's range, and its shapes up to there are kept."""

from __future__ import annotations

import pytest

from tests.shapes.fixture_harness import expectation, run_fixture, shape_fixtures
from tests.shapes.helpers import shape_of, value_shapes


@pytest.mark.parametrize("path", shape_fixtures("ok"), ids=lambda p: p.stem)
def test_ok_fixture_shapes_match_cpu(run_meta, path):
    report = run_meta(path.read_text())
    assert report.errors == [] and report.stopped is None, (report.errors, report.stopped)
    cpu = run_fixture(path, "cpu")
    assert cpu.error is None
    lines = path.read_text().splitlines()
    top_level = [v for v in report.variables if not lines[v.line][:1].isspace() and v.name in cpu.globals]
    assert top_level, "the fixture builds no module-level tensor"
    for variable in top_level:
        assert value_shapes(variable.values[-1]) == shape_of(cpu.globals[variable.name]), variable.name


@pytest.mark.parametrize("path", [p for p in shape_fixtures("broken") if not expectation(p).only_on],
                         ids=lambda p: p.stem)
def test_broken_fixture_error_range_is_the_failing_expression(run_meta, path):
    stated = expectation(path)
    report = run_meta(path.read_text())
    [error] = report.errors
    assert (error.code, error.range.line + 1) == (stated.code, stated.line)
    text = path.read_text().splitlines()[error.range.line]
    failing = text[error.range.col:error.range.end_col] if error.range.end_line == error.range.line else text[error.range.col:]
    # The failing expression (`self.fc1(x)`, `q @ k`, `out += identity`), not the whole line.
    indent = len(text) - len(text.lstrip())
    assert failing.strip() == failing and failing and error.range.col >= indent
