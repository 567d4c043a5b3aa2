"""One shape job: run a driver (and synthesized calls) under the recorders and turn what happened
into one ShapeReport per recorded file.

Runs inside a forked job of the worker (worker.py), or in process for tests and warm-up. Never
installs the runtime guards itself: the fork does that before calling `run_spec`.
"""

from __future__ import annotations

import builtins
import os
import sys
import time
import types
from contextlib import contextmanager

import torch

from torch_lsp.analysis.plan import ExecutionPlan
from torch_lsp.shapes import context as job_context
from torch_lsp.shapes import imports, inputs, observers, script_env
from torch_lsp.shapes.explain import explain, is_data_dependent, track_calls
from torch_lsp.shapes.guards import ExecutionBlocked
from torch_lsp.shapes.module_hooks import JobModuleHooks
from torch_lsp.shapes.report import Location, Note, Origin, Range, ShapeError, ShapeReport
from torch_lsp.shapes.spec import JobSpec
from torch_lsp.shapes.time_limit import JobTimeout, time_limit
from torch_lsp.shapes.tracer import Recorder, RecordingMode, SourceMap

_ENVIRONMENT_ERRORS = (OSError, ImportError, MemoryError, KeyboardInterrupt)


def resolve_device(name: str) -> torch.device:
    if name in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    return torch.device("meta")  # meta by default, and for cuda without a GPU


def run_job(plan: ExecutionPlan, device_name: str = "meta", timeout_s: float = 5.0, on_line=None) -> ShapeReport:
    """A job that runs one file and records only it (tests, warm-up)."""
    spec = JobSpec(key=plan.filename, main=plan, device=device_name, timeout=timeout_s)
    return run_spec(spec, on_line)[plan.filename]


def run_spec(spec: JobSpec, on_line=None) -> dict[str, ShapeReport]:
    """Run the job; `on_line(file, line)` hears every line reached in a recorded file."""
    started = time.perf_counter()
    clock = time.process_time if spec.background else time.perf_counter  # see context.JobContext.clock
    budget_start = clock()
    device = resolve_device(spec.device)
    reports, data_dependent = _execute(spec, device, spec.timeout, on_line)
    if data_dependent:
        left = spec.timeout - (clock() - budget_start)
        rerun, still_dependent = _execute(spec, torch.device("cpu"), left, on_line) if left > 0.2 else (None, True)
        if rerun is not None and not still_dependent and not any(r.stopped for r in rerun.values()):
            reports = rerun
            for report in reports.values():
                report.reran_on_cpu = True
        else:  # never a user error: keep the shapes up to there, say why it stopped
            for report in reports.values():
                report.stopped = report.stopped or "stopped quietly: a data-dependent operation cannot run on meta"
    duration = (time.perf_counter() - started) * 1000
    for report in reports.values():
        report.duration_ms = duration
    if spec.main.filename in reports:
        reports[spec.main.filename].plan_hash = spec.main.hash
    return reports


def _execute(spec: JobSpec, device: torch.device, timeout_s: float, on_line) -> tuple[dict[str, ShapeReport], bool]:
    main = spec.main
    plans = {main.filename: main} if main.source else {}
    # A job of synthesized calls only (no driver) loads the project for its definitions.
    sources = imports.ProjectSources(spec.workspace, spec.overlay, plans, definitions_only=not main.source and bool(spec.probes))
    for path in spec.record:
        if path not in plans:
            plan = _safe_plan(sources, path)
            if plan is not None:
                plans[path] = plan
    last_line = {"file": main.filename, "line": 0}

    def line_seen(filename: str, line: int) -> None:
        last_line["file"], last_line["line"] = filename, line
        if on_line is not None:
            on_line(filename, line)

    context = job_context.JobContext(spec, device, sources=sources)
    recorder = context.recorder = Recorder(plans, device, on_line=line_seen)
    drivers = _DriverLines(main.filename, plans)
    job_context.activate(context)
    active = observers.create(spec.observers, context)
    imports_mark = _mark_imports()
    # A user's `torch.set_default_device(...)` is torch's per-thread state: not kept past the job
    # (a forked job exits anyway; tests and the warm-up run jobs in process).
    default_device = getattr(torch._GLOBAL_DEVICE_CONTEXT, "device_context", None)
    finder = imports.install(sources)
    # What the plans' edits call, in every planned module (the driver and imported project files).
    builtins.__torch_lsp__ = inputs.Helper(device)
    error: BaseException | None = None
    tracker = hooks = None
    try:
        # RecordingMode feeds explain's tracker its torch calls: one mode on the stack, not two.
        with track_calls(function_calls=False, module_calls=False) as tracker, \
                time_limit(timeout_s, cpu=spec.background) as limit:
            hooks = JobModuleHooks(recorder, tracker)
            hooks.install()
            try:
                for observer in active:
                    observer.start(context)
                if main.source:
                    code = compile(main.source, main.filename, "exec")
                    with _traced(recorder, tracker, device, drivers):
                        module = imports.main_module(main.filename, spec.module)
                        exec(code, module.__dict__)
            except BaseException as exc:  # the user's code may raise anything, SystemExit included
                error = exc
            if spec.probes and not isinstance(error, JobTimeout):
                error = _run_probes(spec, context, recorder, tracker, device, drivers) or error
            limit.cancel()
            _stop(active)
            hooks.remove()
    except JobTimeout as exc:  # the timer fired between the user's code and the clean-up
        error = error or exc
    finally:
        sys.settrace(None)
        if hooks is not None:  # a timeout between the user's code and the clean-up
            hooks.remove()
        imports.uninstall(finder)
        del builtins.__torch_lsp__
        for name in _imported_since(imports_mark):  # a CPU re-run imports the project again
            if not _library_module(sys.modules.get(name)):  # torch registers ops once per process
                sys.modules.pop(name, None)
        job_context.activate(None)
        torch._GLOBAL_DEVICE_CONTEXT.device_context = default_device
    reports = _reports(spec, device, recorder, context, drivers, active)
    if error is None:
        return reports, False
    return reports, _classify(error, reports, spec, plans, tracker, timeout_s, last_line, device)


def _stop(active) -> None:
    for observer in active:
        try:
            observer.stop()
        except Exception:  # noqa: BLE001 - an observer's bug costs its own figures, not the shapes
            continue


def _mark_imports() -> str:
    """Put a mark at the end of `sys.modules`' order: what is imported after it comes after it.
    Not a snapshot: copying sys.modules (or a set of its names) writes the reference count of
    each of its ~2,300 names and modules, and in a job's fork every page those live on is then
    copied (1,450-2,200 page faults, a third of a seed job's)."""
    global _marks
    _marks += 1
    mark = f" torch-lsp: imported after job {os.getpid()}.{_marks} started"  # not an identifier
    sys.modules[mark] = types.ModuleType(mark)  # a module: code walking sys.modules expects one
    return mark


_marks = 0


def _imported_since(mark: str) -> list[str]:
    """The names put in `sys.modules` since `_mark_imports` gave `mark` (then taken out again).
    Read from the end back to the mark; a name imported again (deleted, then imported) counts
    as new. If the user's code removed the mark, nothing is known: none."""
    names = []
    for name in reversed(sys.modules):
        if name == mark:
            break
        names.append(name)
    else:
        return []
    sys.modules.pop(mark, None)
    return names


def _library_module(module) -> bool:
    """Installed code (torch's lazily imported parts among it), as opposed to the project's."""
    path = getattr(module, "__file__", None) or ""
    return "site-packages" in path or "dist-packages" in path or path.startswith(sys.base_prefix)


def _safe_plan(sources: imports.ProjectSources, path: str) -> ExecutionPlan | None:
    try:
        return sources.plan(path)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None


def _run_probes(spec, context, recorder, tracker, device, drivers) -> BaseException | None:
    """Synthesized calls of classes no driver reached; only a timeout stops them all."""
    try:
        from torch_lsp.shapes import synthesize
    except ImportError:  # pragma: no cover - synthesize ships with torch-lsp
        return None
    try:
        with _traced(recorder, tracker, device, drivers):
            synthesize.run_probes(spec.probes, context)
    except JobTimeout as exc:
        return exc
    except BaseException:  # noqa: BLE001 - run_probes reports per probe; nothing else may escape
        return None
    return None


@contextmanager
def _traced(recorder: Recorder, tracker, device: torch.device, drivers: "_DriverLines"):
    recorded = recorder.plans  # grows in place as project files are imported
    library_init = recorder.library_init
    library_init.open()

    def trace(frame, event, arg):
        code = frame.f_code
        if code.co_filename not in recorded:  # a library frame: the hot path, no further call
            if code.co_name == "__init__":
                library_init.enter(frame)
            return None
        local = recorder.global_trace(frame, event, arg)
        if local is not None:
            drivers.entered(frame)
        return local

    sys.settrace(trace)
    try:
        with torch.device(device), RecordingMode(recorder, tracker):
            yield
    finally:
        library_init.close()
        sys.settrace(None)


class _DriverLines:
    """For each recorded file other than the driver: the driver's line that first called a
    `forward` defined in it (else any of its functions): the hover's "from train.py:42"."""

    _FUNCTION = 0x1  # CO_OPTIMIZED: functions, not module or class bodies

    def __init__(self, main: str, plans: dict[str, ExecutionPlan]):
        self.main = main
        self.plans = plans
        self.first_call: dict[str, tuple[str, int]] = {}
        self._via_forward: set[str] = set()

    def entered(self, frame) -> None:
        code = frame.f_code
        filename = code.co_filename
        if filename == self.main or filename in self._via_forward or not code.co_flags & self._FUNCTION:
            return
        is_forward = code.co_name == "forward"
        if filename in self.first_call and not is_forward:
            return
        caller = frame.f_back
        while caller is not None:
            if caller.f_code.co_filename in self.plans and caller.f_code.co_filename != filename:
                self.first_call[filename] = (caller.f_code.co_filename, caller.f_lineno - 1)
                if is_forward:
                    self._via_forward.add(filename)
                return
            caller = caller.f_back


def _reports(spec: JobSpec, device, recorder: Recorder, context, drivers: _DriverLines, active) -> dict[str, ShapeReport]:
    reports = {}
    for filename, (variables, expressions) in recorder.finish().items():
        report = ShapeReport(path=filename, device=device.type, variables=variables, expressions=expressions)
        report.notes = list(context.notes.get(filename, []))
        for kind, per_file in context.facts.items():  # e.g. "synthesized": the probes' inputs
            if kind != "origin" and filename in per_file:
                report.extras[kind] = per_file[filename]
        origin = context.facts.get("origin", {}).get(filename)
        if origin is not None:
            report.origin = Origin.from_dict(origin)
        elif filename != spec.main.filename and filename in drivers.first_call:
            path, line = drivers.first_call[filename]
            report.origin = Origin("driver", path, line)
        reports[filename] = report
    for observer in active:
        try:
            results = observer.results()
        except Exception as error:  # noqa: BLE001 - an observer bug must not cost the shapes
            results = {"": {"error": f"{type(error).__name__}: {error}"}}
        for filename, data in (results or {}).items():
            target = reports.get(filename or spec.main.filename) or next(iter(reports.values()), None)
            if target is not None:
                target.extras[observer.name] = data
    # Notes about files that are not recorded (rare) go to the driver's report.
    for filename, notes in context.notes.items():
        if filename not in reports and spec.main.filename in reports:
            reports[spec.main.filename].notes.extend(notes)
    return reports


# --------------------------------------------------------------------------------------------
# Errors


def _classify(error, reports, spec, plans, tracker, timeout_s, last_line, device) -> bool:
    """Fill the reports' errors or `stopped`; True when the error is meta's data dependence."""
    frames = _recorded_frames(error, plans)
    if frames:
        where_file, where = frames[-1]
    else:
        where_file = last_line["file"]
        line = last_line["line"]
        where = Range(line=line, col=0, end_line=line, end_col=10**4)
    where_text = _PLACE  # each report says the place from its own file's point of view (_stop_all)
    stopped = None
    timed_out = False
    if isinstance(error, JobTimeout):
        stopped, timed_out = f"shape analysis stopped after {timeout_s:g} s at {where_text}", True
    elif isinstance(error, SystemExit) and error.code in (None, 0):
        pass  # `sys.exit(main())` that succeeded: the script's own end, not an early stop
    elif isinstance(error, SystemExit):
        stopped = f"the script called sys.exit({error.code!r}) at {where_text}; shapes up to there"
    elif isinstance(error, ExecutionBlocked):
        stopped = f"{error} ({where_text}); shapes up to there"
    elif device.type == "meta" and _data_dependent(error):
        stopped = f"data-dependent operation at {where_text} cannot run on meta"
        _stop_all(reports, stopped, where_file, where.line, False)
        return True
    elif isinstance(error, ModuleNotFoundError) and error.name:
        stopped = (f"stopped at {where_text}: module '{error.name}' is not installed in the interpreter "
                   f"used for shape analysis, {_interpreter()}; install it there or set execution.python")
    elif isinstance(error, MemoryError) or "allocate memory" in str(error):
        stopped = (f"shape analysis stopped at {where_text}: out of memory (the limit is "
                   f"execution.memoryMb = {spec.memory_mb} MiB)")
        _stop_all(reports, stopped, where_file, where.line, False, ended=True)
        return False
    elif isinstance(error, _ENVIRONMENT_ERRORS):
        stopped = f"stopped at {where_text}: {type(error).__name__}: {_first_line(error)}"
    elif _needs_a_gpu(error):  # a CUDA call script_env has no stand-in for: the machine's, not a shape's
        stopped = (f"stopped at {where_text}: it needs a GPU, which shape analysis does not have here "
                   f"({_first_line(error)}); shapes up to there")
    elif _raised_by_torch(error, plans) and script_env.invented_inputs():
        # Found with command-line options torch-lsp made up: the sizes may be ours, not the user's.
        _, message = _explain(error, tracker)
        stopped = (f"shape error at {where_text} with options torch-lsp filled in "
                   f"(`{script_env.invented_inputs()[0]}`), not reported: {message}")
        if where_file in reports:
            reports[where_file].notes.append(Note(
                _placed(f"{stopped}; set `argv` in [tool.torch-lsp.shapes] to check it", where_file, where.line, where_file),
                where.line, "argv"))
    elif _raised_by_torch(error, plans):
        code, message = _explain(error, tracker)
        _report_error(reports, frames, code, message, _first_line(error), where_file, where)
    else:
        stopped = f"stopped at {where_text}: {type(error).__name__}: {_first_line(error)}"
    if stopped is not None:
        _stop_all(reports, stopped, where_file, where.line, timed_out)
    return False


# What torch says when CUDA is asked for on a machine without a usable GPU.
_NO_GPU = ("Found no NVIDIA driver", "CUDA driver version is insufficient", "Torch not compiled with CUDA enabled",
           "No CUDA GPUs are available", "no CUDA-capable device is detected")


def _needs_a_gpu(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and any(text in str(error) for text in _NO_GPU)


def _interpreter() -> str:
    """This interpreter, as the server described it (which setting or environment chose it)."""
    return os.environ.get("TORCH_LSP_INTERPRETER") or sys.executable


# Where a run stopped, said in each recorded file's report as that file's reader needs it:
# `line 12` in the file that stopped, `train.py line 12` in the others (model.py's report must
# not say "line 1" for train.py's first line).
_PLACE = "\x00place\x00"


def _placed(stopped: str, where_file: str, line: int, filename: str) -> str:
    place = f"line {line + 1}" if filename == where_file else f"{os.path.basename(where_file)} line {line + 1}"
    return stopped.replace(_PLACE, place)


def _stop_all(reports, stopped: str, where_file: str, line: int, timed_out: bool, ended: bool = False) -> None:
    for filename, report in reports.items():
        report.stopped = _placed(stopped, where_file, line, filename)
        report.stopped_line = line if filename == where_file else None
        report.timed_out = timed_out and filename == where_file
        report.ended = ended and filename == where_file


def _report_error(reports, frames, code, message, raw, where_file, where) -> None:
    """The error at its innermost line, and at each outer file's frame with related locations
    pointing both ways (model.py's failing line <-> train.py's call)."""
    innermost = Location(where_file, where, message)
    outer = {}
    for filename, rng in frames:
        if filename != where_file and filename not in outer:
            outer[filename] = rng
    target = reports.get(where_file)
    if target is not None:
        target.errors.append(ShapeError(code, message, where, raw,
                                        related=[Location(f, r, "called from here") for f, r in outer.items()]))
    for filename, rng in outer.items():
        report = reports.get(filename)
        if report is not None:
            report.errors.append(ShapeError(code, message, rng, raw, related=[innermost]))


def _data_dependent(error: BaseException) -> bool:
    try:
        return bool(is_data_dependent(error))
    except Exception:  # noqa: BLE001 - a classifier bug must not become a user error
        return "meta" in str(error).lower()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _recorded_frames(error: BaseException, plans: dict[str, ExecutionPlan]) -> list[tuple[str, Range]]:
    """(file, range) of each traceback frame in a recorded file, outermost first."""
    frames = []
    maps: dict[str, SourceMap] = {}
    tb = error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        plan = plans.get(filename)
        if plan is not None:
            source_map = maps.setdefault(filename, SourceMap(filename, plan.source))
            rng = source_map.range_at(tb.tb_frame.f_code, tb.tb_lasti)
            if rng is None:
                line = tb.tb_lineno - 1
                rng = Range(line=line, col=0, end_line=line, end_col=10**4)
            frames.append((filename, rng))
        tb = tb.tb_next
    if not frames and isinstance(error, SyntaxError) and error.filename in plans and error.lineno:
        line = error.lineno - 1
        frames.append((error.filename, Range(line=line, col=0, end_line=line, end_col=10**4)))
    return frames


def _raised_by_torch(error: BaseException, plans: dict[str, ExecutionPlan]) -> bool:
    torch_dir = os.path.dirname(torch.__file__)
    tb, frames = error.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    if any(f.startswith(torch_dir) or "torchvision" in f for f in frames):
        return True
    # torch builtins implemented in C (torch.cat, tensor methods) raise straight into user code.
    return bool(frames) and frames[-1] in plans and isinstance(error, (RuntimeError, IndexError, AssertionError))


def _explain(error: BaseException, tracker) -> tuple[str, str]:
    try:
        explained = explain(error, tracker)
        return explained.code, explained.message
    except Exception:  # noqa: BLE001 - a translation bug must not hide the error itself
        return "TL200", _first_line(error)
