"""track_calls() bookkeeping, is_data_dependent(), and the import-cost promise."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn
from torch.nn.modules import module as nn_module

from torch_lsp.shapes.explain import explain, is_data_dependent, track_calls


def failure_on(device: str, snippet) -> Exception:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device(device):
                snippet()
        except Exception as exc:
            return exc
    raise AssertionError("no error")


def _format_scalar():
    return f"{torch.randn(3).sum():.3f}"


def _branch_on_value():
    if torch.randn(3).sum() > 0:
        pass


META_ONLY_FAILURES = {
    "nonzero": lambda: torch.randn(5).nonzero(),
    "boolean-mask": lambda: torch.randn(5)[torch.randn(5) > 0],
    "masked-select": lambda: torch.masked_select(torch.randn(5), torch.randn(5) > 0),
    "item": lambda: torch.randn(1).item(),
    "accuracy": lambda: (torch.randn(8, 10).argmax(1) == torch.zeros(8)).sum().item(),
    "tolist": lambda: torch.randn(3).tolist(),
    "numpy": lambda: torch.randn(3).numpy(),
    "float": lambda: float(torch.randn(1)),
    "branch-on-value": _branch_on_value,
    "unique": lambda: torch.unique(torch.randint(0, 3, (5,))),
    "where-one-arg": lambda: torch.where(torch.randn(5) > 0),
    "repeat-interleave": lambda: torch.repeat_interleave(torch.tensor([1, 2])),
    "format-scalar": _format_scalar,
    "to-cpu": lambda: torch.randn(3).to("cpu") + torch.ones(3, device="cpu"),
}


@pytest.mark.parametrize("snippet", META_ONLY_FAILURES.values(), ids=META_ONLY_FAILURES.keys())
def test_data_dependent_failures_are_recognised(snippet):
    assert is_data_dependent(failure_on("meta", snippet))


@pytest.mark.parametrize("snippet", META_ONLY_FAILURES.values(), ids=META_ONLY_FAILURES.keys())
def test_the_same_code_runs_on_cpu(snippet):
    # Proof that these are not the user's mistakes: with data, they work.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("cpu"):
            snippet()


def test_cpu_tensors_meeting_meta_modules_are_an_engine_artefact():
    # e.g. torch.from_numpy(...) or device="cpu" in user code while modules were built on meta
    with torch.device("meta"):
        layer = nn.Linear(4, 2)
    with pytest.raises(RuntimeError) as raised:
        layer(torch.zeros(3, 4, device="cpu"))
    assert is_data_dependent(raised.value)
    with pytest.raises(RuntimeError) as raised:
        nn.Linear(4, 2)(torch.zeros(3, 4, device="meta"))
    assert is_data_dependent(raised.value)


def test_real_mistakes_are_not_data_dependent():
    ambiguous = failure_on("meta", lambda: bool(torch.randn(3) > 0))
    assert "ambiguous" in str(ambiguous) and not is_data_dependent(ambiguous)
    linear = failure_on("meta", lambda: nn.Linear(4, 2)(torch.randn(3, 5)))
    assert not is_data_dependent(linear)


def test_chained_data_dependent_error_is_recognised():
    try:
        try:
            with torch.device("meta"):
                torch.randn(1).item()
        except RuntimeError as inner:
            raise ValueError("while computing the accuracy") from inner
    except ValueError as outer:
        assert is_data_dependent(outer)


def test_hooks_are_removed_and_stack_is_empty_after_normal_calls():
    hooks_before = len(nn_module._global_forward_hooks), len(nn_module._global_forward_pre_hooks)
    with torch.device("meta"), track_calls() as tracker:
        nn.Sequential(nn.Linear(4, 4), nn.ReLU())(torch.randn(2, 4))
        assert tracker.stack == []
        with pytest.raises(RuntimeError) as failed:  # the function mode was on: failures are recorded
            torch.cat([torch.randn(1, 2), torch.randn(2, 3)])
        assert tracker.call_at_failure(failed.value).name == "cat"
    after = len(nn_module._global_forward_hooks), len(nn_module._global_forward_pre_hooks)
    assert after == hooks_before


class Forgiving(nn.Module):
    """Catches its child's failure and goes on: the stack must not keep the failed child."""

    def __init__(self):
        super().__init__()
        self.narrow = nn.Linear(3, 2)
        self.wide = nn.Linear(4, 2)

    def forward(self, x):
        try:
            return self.narrow(x)
        except RuntimeError:
            return self.wide(x)


def test_caught_failures_do_not_leave_stale_modules():
    with torch.device("meta"), track_calls() as tracker:
        Forgiving()(torch.randn(2, 4))
        assert tracker.stack == []
        try:
            nn.Linear(5, 1)(torch.randn(2, 4))
        except RuntimeError as exc:
            error = exc
    assert explain(error, tracker).message.startswith("nn.Linear expects 5 input features")
    assert [type(call.module) for call in tracker.modules_at_failure(error)] == [nn.Linear]


def test_module_called_inside_an_except_block_is_not_blamed():
    with torch.device("meta"), track_calls() as tracker:
        try:
            raise KeyError("unrelated")
        except KeyError as unrelated:
            nn.Linear(4, 2)(torch.randn(2, 4))
            assert tracker.modules_at_failure(unrelated) == ()


def test_importing_explain_does_not_import_torch():
    code = "import sys, torch_lsp.shapes.explain; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_an_engines_own_function_mode_can_feed_the_tracker():
    from torch.overrides import TorchFunctionMode

    class EngineMode(TorchFunctionMode):
        def __init__(self, tracker):
            super().__init__()
            self.tracker = tracker

        def __torch_function__(self, func, types, args=(), kwargs=None):
            try:
                return func(*args, **(kwargs or {}))
            except Exception as exc:
                self.tracker.record_failure(exc, func, args, kwargs)
                raise

    with torch.device("meta"), track_calls(function_calls=False) as tracker:
        with EngineMode(tracker):
            try:
                torch.cat([torch.randn(1, 4, 5), torch.randn(1, 4, 6)], dim=1)
            except RuntimeError as exc:
                error = exc
    assert explain(error, tracker).message.startswith(
        "torch.cat(dim=1) needs equal sizes outside dim 1, but tensor 0 is [1, 4, 5]"
    )
