"""End to end through the shape engine: each broken fixture's stated diagnostic (code, line,
message) comes out of the warm worker, and each ok fixture gives none.

Needs the engine (feat/shapes); skipped on a branch without it.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.shapes.fixture_harness import expectation, shape_fixtures

engine_module = pytest.importorskip("torch_lsp.shapes.engine")
plan_module = pytest.importorskip("torch_lsp.analysis.plan")


async def _reports(paths, device_of):
    engine = engine_module.ShapeEngine()
    try:
        reports = {}
        for path in paths:
            plan = plan_module.build_plan(path.read_text(), str(path))
            settings = engine_module.JobSettings(device=device_of(path), timeout=30)
            reports[path] = await engine.analyse(str(path), plan, settings)
        return reports
    finally:
        await engine.close()


@pytest.mark.slow  # the shape worker (a process importing torch) runs every fixture
def test_engine_reports_what_each_fixture_states():
    def device_of(path):
        stated = expectation(path)
        return stated.only_on if stated and stated.only_on else "meta"

    paths = shape_fixtures("broken") + shape_fixtures("ok")
    reports = asyncio.run(_reports(paths, device_of))
    wrong = []
    for path, report in reports.items():
        found = [(e.code, e.range.line + 1, e.message) for e in report.errors]
        stated = expectation(path)
        if stated is None:
            if found or report.stopped:
                wrong.append((path.name, found, report.stopped))
        elif not any(code == stated.code and line == stated.line and stated.message in message
                     for code, line, message in found):
            wrong.append((path.name, found, report.stopped))
    assert wrong == []
