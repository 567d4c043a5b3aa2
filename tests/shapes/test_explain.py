"""explain(): every broken fixture gives its stated code, message and line on meta AND on CPU.

The expectation comes from each fixture's header (``# expect: TL2xx at line N: <substring>``).
Running the same program on CPU is the real execution the meta result is checked against:
both runs must fail with the same explained message, so every shape in a message is one that
CPU execution produced too.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from tests.shapes.fixture_harness import expectation, run_fixture, shape_fixtures
from torch_lsp.shapes.explain import SHAPE_RULES, explain, is_data_dependent, user_span

BROKEN = shape_fixtures("broken")
OK = shape_fixtures("ok")
# CUDA's texts are CPU's; checked when a GPU is present (never required).
DEVICES = ("meta", "cpu") + (("cuda",) if torch.cuda.is_available() else ())


@functools.cache
def run(path: Path, device: str):
    return run_fixture(path, device)


def test_every_broken_fixture_has_an_ok_twin_and_an_expectation():
    assert len(BROKEN) >= 13
    for broken in BROKEN:
        assert broken.with_name(broken.name.replace("_broken", "_ok")).exists(), broken.name
        assert expectation(broken) is not None, f"{broken.name} has no '# expect:' header"
        assert expectation(broken).code in SHAPE_RULES


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_fixture_is_explained(path: Path, device: str):
    expected = expectation(path)
    if expected.only_on and device == "cuda":
        pytest.skip("a device-side assert would poison the CUDA context of the test process")
    result = run(path, device)
    if expected.only_on and expected.only_on != device:
        # Mistakes that need data (token ids) are invisible on meta: it must not fail there.
        assert result.error is None or is_data_dependent(result.error)
        return
    assert result.error is not None, f"{path.name} ran without error on {device}"
    assert not is_data_dependent(result.error)
    explained = explain(result.error, result.tracker)
    assert (explained.code, expected.message in explained.message) == (expected.code, True), (
        explained
    )
    span = user_span(result.error, str(path))
    assert span is not None and span.start.line + 1 == expected.line


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_every_device_gives_the_same_message(path: Path):
    if expectation(path).only_on:
        pytest.skip("this mistake is visible only with data")
    runs = [run(path, device) for device in DEVICES]
    assert len({explain(r.error, r.tracker) for r in runs}) == 1
    assert len({user_span(r.error, str(path)) for r in runs}) == 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", OK, ids=lambda p: p.stem)
def test_ok_fixture_runs(path: Path, device: str):
    result = run(path, device)
    assert result.error is None, f"{path.name} on {device}: {result.error!r}"


def test_span_covers_the_failing_call_expression():
    path = next(p for p in BROKEN if p.stem == "script_linear_broken")
    result = run(path, "meta")
    span = user_span(result.error, str(path))
    line = path.read_text().splitlines()[span.start.line]
    assert line[span.start.col : span.end.col] == "fc(a)"


def test_ok_fixture_outputs_match_between_meta_and_cpu():
    # The ok programs compute the same shapes on meta as on CPU (what the engine relies on).
    for path in OK:
        meta, cpu = run(path, "meta"), run(path, "cpu")
        for name, value in cpu.globals.items():
            if hasattr(value, "shape") and hasattr(value, "device") and not name.startswith("_"):
                assert tuple(meta.globals[name].shape) == tuple(value.shape), (path.name, name)
                assert meta.globals[name].device.type == "meta"
