"""The harness itself: edits apply like an editor applies them, programs run, probes come back."""

import pytest

from harness import RunResult, apply_edits, inserted_text, run_program, span_at, with_probe
from torch_lsp.analysis.facts import Position, Span, TextEdit


def test_span_at_is_a_cursor_on_the_needle():
    source = "a = 1\nbé = 2\nbé = 3\n"
    assert span_at(source, "bé", 1) == Span(Position(2, 0), Position(2, 0))
    assert span_at(source, "= 2", cursor=False) == Span(Position(1, 3), Position(1, 6))
    with pytest.raises(ValueError):
        span_at(source, "zzz")


def test_apply_edits_uses_original_positions_and_code_points():
    source = "x = 'é'\ny = 2\n"
    edits = [
        TextEdit(Span(Position(1, 0), Position(1, 0)), "import os\n"),
        TextEdit(Span(Position(0, 5), Position(0, 6)), "e"),  # the é is one code point
    ]
    assert apply_edits(source, edits) == "x = 'e'\nimport os\ny = 2\n"
    with pytest.raises(AssertionError):
        apply_edits(source, [TextEdit(Span(Position(0, 0), Position(0, 3)), "a"),
                             TextEdit(Span(Position(0, 2), Position(0, 4)), "b")])


def test_inserted_text_lists_added_lines():
    assert inserted_text("a\nb\n", "a\nx\nb\ny\n") == "x\ny\n"


@pytest.mark.slow  # trains the generated program for real
def test_run_program_collects_probes_and_failures(tmp_path):
    result = run_program(with_probe("import os\n", "probe('epochs', int(os.environ['EPOCHS']))\nprobe('d', {'a': [1, 2]})"), tmp_path)
    result.assert_ok()
    assert result.probe("epochs") == 2 and result.probe("d") == {"a": [1, 2]}
    failed = run_program("raise SystemExit(3)\n", tmp_path / "other")
    assert failed.returncode == 3 and not failed.ok
    slow = run_program("import time\ntime.sleep(5)\n", tmp_path / "slow", timeout=0.5)
    assert slow.timed_out and isinstance(slow, RunResult)


@pytest.mark.slow  # trains the generated program for real
def test_run_batch_runs_programs_in_one_interpreter_with_fresh_records(tmp_path):
    """Also the instrumentation that `instrumented` adds to a single program."""
    from harness import Program, fixture, run_batch

    source = fixture("loop_tensor.py")
    result = run_batch([
        Program("short", source, {"EPOCHS": "1"}),
        Program("long", with_probe(source, "probe('epochs', EPOCHS)"), {"EPOCHS": "2"}),
        Program("broken", "raise ValueError('boom')\n"),
    ], tmp_path).assert_ok()
    # 64 samples in batches of 16; StepLR(step_size=2) keeps the lr for both epochs.
    short, long = result.probe("short.run"), result.probe("long.run")
    assert short["steps"] == 4 and long["steps"] == 8 and long["lrs"] == [1e-3] * 8
    assert long["linear_dtypes"] == ["torch.float32"] and long["checksum"] is not None
    assert result.probe("long.epochs") == 2
    assert "ValueError: boom" in result.probe("broken.error")
