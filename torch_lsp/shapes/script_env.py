"""Make the scripts real repositories are made of runnable in a shape job (worker side).

`install(spec)` runs in the job's fork before any user code, after the guards. Each helper
stands in for something a script expects from the machine it was written for, says so in a
note (job_notes.py) at the user's line, and never turns into a shape finding:

- **command-line options**: `parse_args()` sees `shapes.argv` when configured; otherwise each
  required option (and required positional) is filled from its `choices`, `default` or
  `type`, and a note lists what was filled in;
- **distributed training without a launcher**: `init_process_group` joins a single-process
  fake process group (torch's own, backend "fake"; collectives do nothing); DDP and FSDP
  wrappers call the wrapped model directly (DDP's start-up checks read parameter values, which
  meta tensors do not have); `torch.multiprocessing.spawn` and `multiprocessing.Process` run
  the first worker function in the job itself;
- **GPUs that are not here**: `torch.cuda.device_count()` answers at least 2 to the project's
  own code (a script that exits "needs 2 GPUs" runs its multi-GPU path on meta; torch itself
  still hears the truth), `set_device`, `synchronize` and `current_device` are harmless, and
  streams, events, memory statistics and the device's properties have stand-ins (a note says
  what a script was told about the device);
- **storage calls** that only make sense for CPU memory (`share_memory_()`, `pin_memory()`,
  `Module.share_memory()`) return the tensor unchanged when it is not on the CPU;
- **missing data files**: opening a file that does not exist adds a note naming the file and
  the line, then stops as before (the job reports it quietly);
- **programs**: a subprocess the guards refuse looks like a program that is not installed
  (a `FileNotFoundError`), which scripts probing `git rev-parse` already handle; uncaught, it
  still stops the analysis quietly.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import importlib.abc
import importlib.machinery
import io
import multiprocessing.process
import os
import subprocess
import sys
import types
from typing import Any

import torch

from torch_lsp.shapes import job_notes
from torch_lsp.shapes.guards import ExecutionBlocked

FAKE_GPU_COUNT = 2

# Set when an input was invented (required options filled in): shapes then rest on a guess,
# and an error found with invented values is not the user's (see invented_inputs()).
_invented: list[str] = []


def invented_inputs() -> list[str]:
    """What this job made up on the script's behalf (for the job's error classification)."""
    return list(_invented)


def install(spec: Any) -> None:
    """Patch the job's process (a fork) for `spec` (a JobSpec: its argv and device)."""
    sys.dont_write_bytecode = True  # imports of workspace modules must not write __pycache__
    _invented.clear()
    _patch_argparse(configured=bool(getattr(spec, "argv", None)))
    _patch_distributed()
    _patch_cuda(getattr(spec, "device", "meta"))
    _patch_storage_calls()
    _patch_missing_files()
    _programs_look_missing()


# -- argparse -------------------------------------------------------------------------------------


def _patch_argparse(configured: bool) -> None:
    real_parse = argparse.ArgumentParser.parse_known_args
    real_error = argparse.ArgumentParser.error

    def parse_known_args(self, args=None, namespace=None):
        tokens = list(sys.argv[1:] if args is None else args)
        if not configured:
            filled = _fill_required(self, tokens)
            if filled:
                tokens += filled
                shown = " ".join(filled)
                _invented.append(shown)
                job_notes.note("argv", f"required options were not given; ran with `{shown}` "
                                      "(set `argv` in [tool.torch-lsp.shapes] to choose)")
        return real_parse(self, tokens, namespace)

    def error(self, message):
        job_notes.note("argv", f"the script's options were rejected: {message}")
        return real_error(self, message)

    argparse.ArgumentParser.parse_known_args = parse_known_args
    argparse.ArgumentParser.error = error


def _fill_required(parser: argparse.ArgumentParser, tokens: list[str]) -> list[str]:
    filled: list[str] = []
    positionals_given = any(not t.startswith("-") for t in tokens)
    grouped = {a for g in parser._mutually_exclusive_groups for a in g._group_actions}
    for action in parser._actions:
        # argparse marks `nargs="*"` positionals required, yet accepts none (unittest's `tests`).
        if action in grouped or not action.required or action.nargs in ("*", "?", argparse.REMAINDER):
            continue
        if action.option_strings:
            if not _given(action, tokens):
                filled += [_long_option(action), *_placeholder(action)]
        elif not positionals_given:
            filled += _placeholder(action)
    for group in parser._mutually_exclusive_groups:
        if group.required and not any(_given(a, tokens) for a in group._group_actions) and group._group_actions:
            action = group._group_actions[0]
            filled += [_long_option(action), *_placeholder(action)] if action.option_strings else _placeholder(action)
    return filled


def _given(action: argparse.Action, tokens: list[str]) -> bool:
    for token in tokens:
        for option in action.option_strings:
            if token == option or (option.startswith("--") and token.startswith(option + "=")):
                return True
            if len(option) == 2 and not token.startswith("--") and token.startswith(option) and len(token) > 2:
                return True  # -b32
    return False


def _long_option(action: argparse.Action) -> str:
    return max(action.option_strings, key=len)


def _placeholder(action: argparse.Action) -> list[str]:
    """A value the option accepts: its first choice, its default, or one of its type."""
    if action.nargs == 0:  # a flag (store_true, count, ...)
        return []
    if action.choices:
        value: Any = next(iter(action.choices))
    elif action.default not in (None, argparse.SUPPRESS):
        value = action.default
    elif action.type is int:
        value = 32
    elif action.type is float:
        value = 0.1
    else:
        value = action.dest
    count = action.nargs if isinstance(action.nargs, int) else 1
    items = value if isinstance(value, (list, tuple)) else [value]
    return [str(items[i % len(items)]) for i in range(count)] if items else []


# -- distributed ----------------------------------------------------------------------------------


def _patch_distributed() -> None:
    import torch.distributed as dist

    if not dist.is_available():
        return
    from torch.testing._internal.distributed.fake_pg import FakeStore

    real_init = dist.init_process_group

    def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1, store=None,
                           *args, **kwargs):
        world = world_size if world_size and world_size > 0 else int(os.environ.get("WORLD_SIZE") or 1)
        rank = rank if rank is not None and rank >= 0 else int(os.environ.get("RANK") or 0)
        rank = min(max(rank, 0), world - 1)
        job_notes.note("distributed", f"no launcher here: joined a single-process fake process group "
                                     f"(rank {rank} of {world}); collectives do nothing")
        return real_init("fake", store=FakeStore(), rank=rank, world_size=world)

    dist.init_process_group = init_process_group
    _replace_wrappers()
    _run_spawned_workers_in_process()


def _replace_wrappers() -> None:
    from torch import nn
    import torch.nn.parallel as parallel
    import torch.nn.parallel.distributed as distributed

    real_ddp = distributed.DistributedDataParallel

    class DistributedDataParallel(real_ddp):
        """DDP as seen by one process: it calls the model (its checks read parameter values)."""

        def __init__(self, module, *args, **kwargs):
            nn.Module.__init__(self)
            self.module = module
            self.device_ids = kwargs.get("device_ids")

        def forward(self, *inputs, **kwargs):
            return self.module(*inputs, **kwargs)

        def no_sync(self):
            return contextlib.nullcontext()

        def join(self, *args, **kwargs):
            return contextlib.nullcontext()

    DistributedDataParallel.__module__ = real_ddp.__module__
    distributed.DistributedDataParallel = parallel.DistributedDataParallel = DistributedDataParallel
    # FSDP is replaced once the script imports it: importing it here cost every job 5 ms, and
    # 200 ms where nothing had imported dynamo (DTensor's op tables; lazy_dynamo.py).
    if "torch.distributed.fsdp" in sys.modules:
        _replace_fsdp(sys.modules["torch.distributed.fsdp"])
    else:
        sys.meta_path.insert(0, _AfterImport("torch.distributed.fsdp", _replace_fsdp))


def _replace_fsdp(fsdp: types.ModuleType) -> None:
    from torch import nn

    class FullyShardedDataParallel(nn.Module):
        def __init__(self, module, *args, **kwargs):
            super().__init__()
            self.module = module

        def forward(self, *inputs, **kwargs):
            return self.module(*inputs, **kwargs)

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self._modules["module"], name)

    fsdp.FullyShardedDataParallel = FullyShardedDataParallel
    if hasattr(fsdp, "fully_shard"):
        fsdp.fully_shard = lambda module, *args, **kwargs: module


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls `then(module)` once the module named `name` has been imported (a forked job's
    process: never removed)."""

    def __init__(self, name: str, then) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenLoader(spec.loader, self.then)
        return spec


class _ThenLoader(importlib.abc.Loader):
    def __init__(self, loader, then) -> None:
        self.loader, self.then = loader, then

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        self.then(module)


def _run_spawned_workers_in_process() -> None:
    import torch.multiprocessing as mp

    def spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
        job_notes.note("distributed", f"{nprocs} worker processes requested: rank 0 ran, in this process")
        fn(0, *args)
        return None

    def start_processes(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn", **kwargs):
        return spawn(fn, args, nprocs)

    mp.spawn = spawn
    mp.start_processes = start_processes
    started: list[Any] = []
    real_start = multiprocessing.process.BaseProcess.start
    real_join = multiprocessing.process.BaseProcess.join

    def start(self):
        if started and started[0] is not self:
            started.append(self)  # only the first runs: shapes are the same in every worker
            return
        if getattr(self, "_target", None) is None:
            return real_start(self)
        started.append(self)
        job_notes.note("distributed", "a worker process was started: the first one ran in this process, "
                                     "the others not at all")
        self.run()

    def join(self, timeout=None):
        if self in started:
            return None
        return real_join(self, timeout)

    multiprocessing.process.BaseProcess.start = start
    multiprocessing.process.BaseProcess.join = join


# -- GPUs -----------------------------------------------------------------------------------------


def _patch_cuda(device: str) -> None:
    cuda = torch.cuda
    if device in ("cuda", "auto") and cuda.is_available():
        return  # a real GPU job sees the real GPUs
    real_count = cuda.device_count
    told: list[bool] = []

    def device_count() -> int:
        count = real_count()
        # Only the project's own code is told more GPUs than there are: torch asks too (e.g.
        # `is_available()` counts devices), and must keep hearing the truth.
        if count >= FAKE_GPU_COUNT or not job_notes.is_project_file(sys._getframe(1).f_code.co_filename):
            return count
        if not told:
            told.append(True)
            job_notes.note("environment", f"torch.cuda.device_count() answered {FAKE_GPU_COUNT} "
                                         "(shapes run on meta, no GPU needed)")
        return FAKE_GPU_COUNT

    cuda.device_count = device_count
    if device not in ("cuda", "auto") or not cuda.is_available():
        cuda.set_device = lambda device: None
        cuda.synchronize = lambda device=None: None
        cuda.current_device = lambda: 0
        cuda.get_device_name = lambda device=None: "meta (no GPU)"
        _stand_in_for_the_gpu(cuda)


# What scripts written on a GPU machine ask the GPU besides its count: timing with events, a
# prefetching stream, memory statistics, the device's size. Without a GPU torch raises for each
# ("Found no NVIDIA driver"), and the shapes after that line would be lost for no shape's sake.
STAND_IN_GPU = {"name": "meta (no GPU)", "total_memory": 80 * 2**30, "major": 8, "minor": 0,
                "multi_processor_count": 108}


class _Event:
    """torch.cuda.Event without a GPU: recorded and waited on at once; no time passes."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False) -> None:
        pass

    def record(self, stream=None) -> None:
        pass

    def wait(self, stream=None) -> None:
        pass

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end_event) -> float:
        return 0.0


class _Stream:
    """torch.cuda.Stream without a GPU: nothing runs asynchronously, so there is nothing to order."""

    def __init__(self, device=None, priority: int = 0, **kwargs) -> None:
        self.device, self.priority = device, priority

    def wait_stream(self, stream) -> None:
        pass

    def wait_event(self, event) -> None:
        pass

    def record_event(self, event=None) -> _Event:
        return event if event is not None else _Event()

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass


def _stand_in_for_the_gpu(cuda) -> None:
    told: list[bool] = []

    def properties(device=None):
        if not told and job_notes.is_project_file(sys._getframe(1).f_code.co_filename):
            told.append(True)
            job_notes.note("environment", f"torch.cuda.get_device_properties() answered a stand-in GPU "
                                         f"({STAND_IN_GPU['total_memory'] // 2**30} GiB, compute capability "
                                         f"{STAND_IN_GPU['major']}.{STAND_IN_GPU['minor']}): shapes run on meta")
        return types.SimpleNamespace(**STAND_IN_GPU)

    cuda.Event, cuda.Stream = _Event, _Stream
    cuda.current_stream = cuda.default_stream = lambda device=None: _Stream(device)
    cuda.stream = lambda stream=None: contextlib.nullcontext()
    cuda.get_device_properties = properties
    cuda.get_device_capability = lambda device=None: (STAND_IN_GPU["major"], STAND_IN_GPU["minor"])
    cuda.mem_get_info = lambda device=None: (STAND_IN_GPU["total_memory"], STAND_IN_GPU["total_memory"])
    for name in ("reset_peak_memory_stats", "reset_max_memory_allocated", "reset_max_memory_cached",
                 "reset_accumulated_memory_stats", "ipc_collect"):
        setattr(cuda, name, lambda device=None: None)
    cuda.memory_summary = lambda device=None, abbreviated=False: ""
    real_record_stream = torch.Tensor.record_stream

    def record_stream(self, stream):
        return None if isinstance(stream, _Stream) else real_record_stream(self, stream)

    torch.Tensor.record_stream = record_stream


# -- storage calls on meta ------------------------------------------------------------------------


def _patch_storage_calls() -> None:
    real_share = torch.Tensor.share_memory_
    real_pin = torch.Tensor.pin_memory

    def share_memory_(self):
        return self if self.device.type != "cpu" else real_share(self)

    def pin_memory(self, *args, **kwargs):
        return self if self.device.type != "cpu" else real_pin(self, *args, **kwargs)

    torch.Tensor.share_memory_ = share_memory_
    torch.Tensor.pin_memory = pin_memory


# -- data files that are not here ------------------------------------------------------------------


def _patch_missing_files() -> None:
    real_open = builtins.open

    def open_noting_missing(file, mode="r", *args, **kwargs):
        try:
            return real_open(file, mode, *args, **kwargs)
        except FileNotFoundError:
            caller = sys._getframe(1).f_code.co_filename
            if isinstance(file, (str, bytes, os.PathLike)) and job_notes.is_project_file(caller):
                job_notes.note("data", f"`{os.fsdecode(file)}` does not exist here: shapes stop at this line")
            raise

    builtins.open = open_noting_missing
    io.open = open_noting_missing


# -- programs -------------------------------------------------------------------------------------


class ProgramNotRun(ExecutionBlocked, FileNotFoundError):
    """A refused subprocess, as scripts expect a missing program to fail (`except OSError`)."""


def _programs_look_missing() -> None:
    for name in ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
        refused = getattr(subprocess, name, None)
        if refused is not None:
            setattr(subprocess, name, _as_missing_program(refused))


def _as_missing_program(refused):
    def start(*args, **kwargs):
        try:
            return refused(*args, **kwargs)
        except ProgramNotRun:
            raise
        except ExecutionBlocked as error:
            raise ProgramNotRun(str(error)) from None

    return start
