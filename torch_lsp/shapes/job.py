"""One shape job: run a plan under the recorders and turn what happened into a ShapeReport.

Runs inside a forked job of the worker (worker.py), or in process for tests and warm-up. Never
installs the runtime guards itself: the fork does that before calling `run_job`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager

import torch

from torch_lsp.analysis.plan import ExecutionPlan
from torch_lsp.shapes import guards, inputs
from torch_lsp.shapes.explain import explain, is_data_dependent, track_calls
from torch_lsp.shapes.report import Range, ShapeError, ShapeReport
from torch_lsp.shapes.tracer import Recorder, RecordingMode, SourceMap

_ENVIRONMENT_ERRORS = (OSError, ImportError, MemoryError, KeyboardInterrupt)


class JobTimeout(BaseException):
    pass


def resolve_device(name: str) -> torch.device:
    if name in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    return torch.device("meta")  # meta by default, and for cuda without a GPU


def run_job(plan: ExecutionPlan, device_name: str = "meta", timeout_s: float = 5.0,
            on_line=None) -> ShapeReport:
    started = time.perf_counter()
    device = resolve_device(device_name)
    report, data_dependent = _execute(plan, device, timeout_s, on_line)
    if data_dependent:
        left = timeout_s - (time.perf_counter() - started)
        cpu_report, still_dependent = _execute(plan, torch.device("cpu"), left, on_line) if left > 0.2 else (None, True)
        if cpu_report is not None and not still_dependent and cpu_report.stopped is None:
            report = cpu_report
            report.reran_on_cpu = True
        else:  # never a user error: keep the shapes up to there, say why it stopped
            report.stopped = report.stopped or "stopped quietly: a data-dependent operation cannot run on meta"
    report.plan_hash = plan.hash
    report.duration_ms = (time.perf_counter() - started) * 1000
    return report


def _execute(plan: ExecutionPlan, device: torch.device, timeout_s: float, on_line) -> tuple[ShapeReport, bool]:
    last_line = [0]

    def line_seen(line: int) -> None:
        last_line[0] = line
        if on_line is not None:
            on_line(line)

    recorder = Recorder(plan, device, on_line=line_seen)
    scope = {"__name__": "__main__", "__file__": plan.filename, "__builtins__": __builtins__,
             "__torch_lsp__": inputs.Helper(device)}
    error: BaseException | None = None
    tracker = None
    # RecordingMode feeds explain's tracker its torch calls: one mode on the stack, not two.
    with track_calls(function_calls=False) as tracker, _time_limit(timeout_s):
        hooks = (torch.nn.modules.module.register_module_forward_pre_hook(recorder.module_pre_hook),
                 torch.nn.modules.module.register_module_forward_hook(recorder.module_hook, always_call=True))
        try:
            code = compile(plan.source, plan.filename, "exec")
            sys.settrace(recorder.global_trace)
            with torch.device(device), RecordingMode(recorder, tracker):
                exec(code, scope)
        except BaseException as exc:  # the user's code may raise anything, SystemExit included
            error = exc
        finally:
            sys.settrace(None)
            for hook in hooks:
                hook.remove()
    variables, expressions = recorder.finish()
    report = ShapeReport(device=device.type, variables=variables, expressions=expressions)
    if error is None:
        return report, False
    return report, _classify(error, report, plan, tracker, timeout_s, last_line[0], device)


def _classify(error, report, plan, tracker, timeout_s, last_line, device) -> bool:
    """Fill report.errors or report.stopped; True when the error is meta's data dependence."""
    where = _user_range(error, plan) or Range(line=last_line, col=0, end_line=last_line, end_col=10**4)
    line_text = f"line {where.line + 1}"
    if isinstance(error, JobTimeout):
        report.stopped = f"shape analysis stopped after {timeout_s:g} s at {line_text}"
        report.timed_out = True
    elif isinstance(error, SystemExit):
        report.stopped = f"the script called sys.exit at {line_text}; shapes up to there"
    elif isinstance(error, guards.ExecutionBlocked):
        report.stopped = f"{error} ({line_text}); shapes up to there"
    elif device.type == "meta" and _data_dependent(error):
        report.stopped = f"data-dependent operation at {line_text} cannot run on meta"
        report.stopped_line = where.line
        return True
    elif isinstance(error, _ENVIRONMENT_ERRORS) or "allocate memory" in str(error):
        report.stopped = f"stopped at {line_text}: {type(error).__name__}: {_first_line(error)}"
    elif _raised_by_torch(error, plan):
        code, message = _explain(error, tracker)
        report.errors.append(ShapeError(code=code, message=message, range=where, raw=_first_line(error)))
    else:
        report.stopped = f"stopped at {line_text}: {type(error).__name__}: {_first_line(error)}"
    report.stopped_line = where.line if report.stopped else None
    return False


def _data_dependent(error: BaseException) -> bool:
    try:
        return bool(is_data_dependent(error))
    except Exception:  # noqa: BLE001 - a classifier bug must not become a user error
        return "meta" in str(error).lower()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _user_range(error: BaseException, plan: ExecutionPlan) -> Range | None:
    """Source range of the innermost frame of the traceback that is in the user's file."""
    tb, found = error.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == plan.filename:
            found = tb
        tb = tb.tb_next
    if found is None:
        return None
    return SourceMap(plan.filename, plan.source).range_at(found.tb_frame.f_code, found.tb_lasti)


def _raised_by_torch(error: BaseException, plan: ExecutionPlan) -> bool:
    torch_dir = os.path.dirname(torch.__file__)
    tb, frames = error.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    if any(f.startswith(torch_dir) or "torchvision" in f for f in frames):
        return True
    # torch builtins implemented in C (torch.cat, tensor methods) raise straight into user code.
    return bool(frames) and frames[-1] == plan.filename and isinstance(error, (RuntimeError, IndexError, AssertionError))


def _explain(error: BaseException, tracker) -> tuple[str, str]:
    try:
        explained = explain(error, tracker)
        return explained.code, explained.message
    except Exception:  # noqa: BLE001 - a translation bug must not hide the error itself
        return "TL200", _first_line(error)


@contextmanager
def _time_limit(seconds: float):
    def stop(signum, frame):
        raise JobTimeout()

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
