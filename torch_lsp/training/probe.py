"""The observer that runs inside the training process (never inside the language server).

launch.py loads this file by path, before the user's script, under the module name
``_torch_lsp_probe``. It watches what the script does without changing what it computes:

- ``Tensor.backward``: the tensor is the loss; only a reference is kept, read when a record is
  written (throttled), so there is no per-step device sync;
- every ``Optimizer.step`` (a global post hook): step count, learning rate per param group;
- ``DataLoader`` iteration: epochs, batch size -> samples/s, and per step the time spent
  waiting for the next batch versus the time spent between batches (forward/backward/step);
- ``SummaryWriter.add_scalar`` (torch.utils.tensorboard or tensorboardX) and printed
  ``name: value`` / ``name=value`` pairs: user metrics;
- ``torch_lsp.log(**metrics)``: explicit user metrics.

Records go to ``metrics.jsonl`` in the run directory, one JSON object per line, flushed as
written, so a crash or a kill loses nothing already recorded. Under torchrun only rank 0
records. Only the standard library is imported at module level; torch is imported by install().
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import sys
import threading
import time

from _torch_lsp_epochs import EpochCounter  # loaded beside this file by launch.py

ENV_RUN_DIR = "TORCH_LSP_RUN_DIR"
ENV_INTERVAL = "TORCH_LSP_RECORD_INTERVAL"
ENV_MAX_STEPS = "TORCH_LSP_MAX_STEPS"
METRICS_FILE = "metrics.jsonl"
MIN_RATE_WINDOW_S = 0.25

# "Epoch: 1, Loss: 0.345", "loss=0.41", "acc: 93.2%": a name, ':' or '=', a number. Not URLs
# ("host:8080/x"), times ("12:30:45") or versions ("2.14.1").
PRINTED_PAIR = re.compile(
    r"(?<![\w./])([A-Za-z_][\w./-]*)\s*[:=]\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?![\w:./])"
)

_observer: "Observer | None" = None


def _as_float(value) -> float | None:
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class LoaderStats:
    """Time and samples of one DataLoader, accumulated over all its epochs."""

    __slots__ = ("iterations", "batches", "samples", "wait_s", "compute_s", "length",
                 "num_workers", "pin_memory", "batch_in_epoch")

    def __init__(self) -> None:
        self.iterations = 0
        self.batches = 0
        self.samples = 0
        self.wait_s = 0.0
        self.compute_s = 0.0
        self.length: int | None = None
        self.num_workers = 0
        self.pin_memory = False
        self.batch_in_epoch = 0


def _batch_size(batch) -> int:
    """Leading dimension of the first tensor found in a batch (tuple, list, dict, tensor)."""
    pending = [batch]
    while pending:
        item = pending.pop(0)
        shape = getattr(item, "shape", None)
        if shape is not None and len(shape) > 0:
            return int(shape[0])
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return 0


class Observer:
    def __init__(self, run_dir: str, interval_s: float, max_steps: int | None) -> None:
        self._file = open(os.path.join(run_dir, METRICS_FILE), "a", encoding="utf-8")
        self._lock = threading.RLock()
        self.interval_s = interval_s
        self.max_steps = max_steps
        self.started = time.time()
        self.step = 0
        self.last_loss_tensor = None
        self.lr: list[float] = []
        self.device: str | None = None
        self.main_optimizer_id: int | None = None
        self.loaders: dict[int, LoaderStats] = {}
        self.train_loader_id: int | None = None
        self.active_loader_id: int | None = None
        self.epochs = EpochCounter()
        self.last_emit_time = 0.0
        self.last_emit_step = -1
        self.last_window = (0, 0.0, None)  # (samples, train time, samples/s) of the last rate
        self.warned_nonfinite = False

    # -- writing ---------------------------------------------------------------------------
    def write(self, kind: str, **fields) -> None:
        record = {"kind": kind, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, default=str)
        with self._lock:
            if not self._file.closed:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    # -- observations ----------------------------------------------------------------------
    def on_backward(self, tensor) -> None:
        if tensor.numel() != 1:
            return
        self.last_loss_tensor = tensor.detach()
        if self.train_loader_id is None and self.active_loader_id is not None:
            self.train_loader_id = self.active_loader_id
            self.epochs.detect_total(sys._getframe(2))
        if self.main_optimizer_id is None:
            # No optimizer (yet): still report losses, throttled the same way.
            self.maybe_emit()

    def on_optimizer_step(self, optimizer) -> None:
        if self.main_optimizer_id is None:
            self.main_optimizer_id = id(optimizer)
        if id(optimizer) != self.main_optimizer_id:
            return  # with several optimizers (GANs), the first one sets the step count
        self.step += 1
        groups = optimizer.param_groups
        self.lr = [v for v in (_as_float(g.get("lr")) for g in groups) if v is not None]
        if self.device is None:
            for group in groups:
                for param in group["params"]:
                    self.device = str(param.device)
                    break
                if self.device:
                    break
        self.maybe_emit()
        if self.max_steps is not None and self.step >= self.max_steps:
            self.emit_step()
            self.write("max_steps", step=self.step)
            raise SystemExit(0)

    def on_loader_iter(self, loader) -> None:
        stats = self.loaders.setdefault(id(loader), LoaderStats())
        stats.iterations += 1
        stats.batch_in_epoch = 0
        try:
            stats.length = len(loader)
        except TypeError:  # IterableDataset without __len__
            stats.length = None
        stats.num_workers = int(getattr(loader, "num_workers", 0) or 0)
        stats.pin_memory = bool(getattr(loader, "pin_memory", False))
        if id(loader) == self.train_loader_id and stats.iterations > 1:
            self.emit_step()  # an epoch boundary always gets a record
            self.write("epoch", epoch=stats.iterations - 1, step=self.step)

    def on_batch(self, loader_id: int, batch, wait_s: float, compute_s: float) -> None:
        stats = self.loaders.get(loader_id)
        if stats is None:
            return
        stats.batches += 1
        stats.batch_in_epoch += 1
        stats.samples += _batch_size(batch)
        stats.wait_s += wait_s
        stats.compute_s += compute_s
        self.active_loader_id = loader_id

    def on_metric(self, name: str, value, source: str) -> None:
        number = _finite_or_none(_as_float(value))
        if number is None:
            return
        self.write("metric", name=name, value=number, step=self.step, source=source,
                   epoch=self.current_epoch())

    # -- records -----------------------------------------------------------------------
    def current_epoch(self) -> int | None:
        stats = self.loaders.get(self.train_loader_id) if self.train_loader_id else None
        return stats.iterations if stats else None

    def maybe_emit(self) -> None:
        now = time.monotonic()
        if now - self.last_emit_time >= self.interval_s or self.step <= 1:
            self.emit_step()

    def emit_step(self) -> None:
        if self.step == self.last_emit_step and self.last_loss_tensor is None:
            return
        self.last_emit_time = time.monotonic()
        self.last_emit_step = self.step
        loss = _as_float(self.last_loss_tensor) if self.last_loss_tensor is not None else None
        if loss is not None and not math.isfinite(loss) and not self.warned_nonfinite:
            self.warned_nonfinite = True
            self.write("warning", message=f"loss is {loss} at step {self.step}", step=self.step)
        fields = {"step": self.step, "loss": _finite_or_none(loss), "lr": self.lr,
                  "device": self.device}
        stats = self.loaders.get(self.train_loader_id) if self.train_loader_id else None
        if stats is not None:
            train_time = stats.wait_s + stats.compute_s
            samples0, time0, rate = self.last_window
            window = train_time - time0
            if window >= MIN_RATE_WINDOW_S or rate is None and window > 0:
                # A rate over a few milliseconds is noise: keep the last one until enough time.
                rate = round((stats.samples - samples0) / window, 3)
                self.last_window = (stats.samples, train_time, rate)
            fields.update(
                epoch=stats.iterations, epochs=self.epochs.total, batch=stats.batch_in_epoch,
                batches=stats.length, samples=stats.samples,
                data_wait_s=round(stats.wait_s, 6), compute_s=round(stats.compute_s, 6),
                samples_per_s=rate, num_workers=stats.num_workers, pin_memory=stats.pin_memory,
            )
        self.write("step", **fields)


# -- patches ------------------------------------------------------------------------------
def _patch_backward(torch) -> None:
    original = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        if _observer is not None:
            _observer.on_backward(self)
        return original(self, *args, **kwargs)

    backward.__wrapped__ = original
    backward.__doc__ = original.__doc__
    torch.Tensor.backward = backward


def _patch_optimizer(torch) -> None:
    from torch.optim.optimizer import register_optimizer_step_post_hook

    def after_step(optimizer, args, kwargs):
        if _observer is not None:
            _observer.on_optimizer_step(optimizer)

    register_optimizer_step_post_hook(after_step)


def _patch_dataloader(torch) -> None:
    from torch.utils.data import dataloader

    original_iter = dataloader.DataLoader.__iter__
    original_next = dataloader._BaseDataLoaderIter.__next__

    def __iter__(self):
        if _observer is not None:
            _observer.on_loader_iter(self)
        iterator = original_iter(self)
        iterator._torch_lsp_loader_id = id(self)
        iterator._torch_lsp_last_batch_at = None
        return iterator

    def __next__(self):
        started = time.perf_counter()
        returned_at = getattr(self, "_torch_lsp_last_batch_at", None)
        compute_s = started - returned_at if returned_at is not None else 0.0
        batch = original_next(self)
        now = time.perf_counter()
        self._torch_lsp_last_batch_at = now
        loader_id = getattr(self, "_torch_lsp_loader_id", None)
        if loader_id is not None and _observer is not None:
            _observer.on_batch(loader_id, batch, now - started, compute_s)
        return batch

    dataloader.DataLoader.__iter__ = __iter__
    dataloader._BaseDataLoaderIter.__next__ = __next__


def _patch_summary_writer(cls) -> None:
    original = cls.add_scalar
    if getattr(original, "_torch_lsp_patched", False):
        return

    def add_scalar(self, tag, scalar_value, *args, **kwargs):
        if _observer is not None:
            _observer.on_metric(str(tag), scalar_value, "tensorboard")
        return original(self, tag, scalar_value, *args, **kwargs)

    add_scalar._torch_lsp_patched = True
    cls.add_scalar = add_scalar


class _PatchOnImport:
    """Meta path finder: patch SummaryWriter when (and only if) the script imports it."""

    TARGETS = {"torch.utils.tensorboard.writer": "SummaryWriter", "tensorboardX.writer": "SummaryWriter"}

    def find_spec(self, name, path, target=None):
        if name not in self.TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                self._wrap(spec.loader, self.TARGETS[name])
                return spec
        return None

    @staticmethod
    def _wrap(loader, class_name: str) -> None:
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            cls = getattr(module, class_name, None)
            if cls is not None:
                _patch_summary_writer(cls)

        loader.exec_module = exec_module


class _StdoutTap:
    """Passes everything through to the real stdout and reads metrics from complete lines."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._pending = ""

    def write(self, text):
        written = self._stream.write(text)
        if _observer is not None and isinstance(text, str):
            self._pending += text
            if "\n" in self._pending:
                *lines, self._pending = self._pending.split("\n")
                for line in lines:
                    record_printed_line(line)
        return written

    def __getattr__(self, name):
        return getattr(self._stream, name)


def record_printed_line(line: str) -> None:
    if _observer is None:
        return
    for name, value in PRINTED_PAIR.findall(line[:1000]):
        _observer.on_metric(name.lower(), value, "print")


def log(**metrics) -> None:
    """Record user metrics (``torch_lsp.log(accuracy=0.93)``); a no-op outside a run."""
    if _observer is None:
        return
    for name, value in metrics.items():
        _observer.on_metric(name, value, "log")


def record_exception(exc: BaseException, user_files: set[str]) -> None:
    """Write the error and the innermost frame in the user's own files."""
    if _observer is None:
        return
    frame_file, frame_line = None, None
    tb = exc.__traceback__
    while tb is not None:
        filename = os.path.abspath(tb.tb_frame.f_code.co_filename)
        if EpochCounter.is_user_file(filename) or filename in user_files:
            frame_file, frame_line = filename, tb.tb_lineno
        tb = tb.tb_next
    _observer.write("error", type=type(exc).__name__, message=str(exc)[:2000],
                    file=frame_file, line=frame_line, step=_observer.step)


def _finish() -> None:
    if _observer is None:
        return
    if _observer.step != _observer.last_emit_step or _observer.step == 0:
        if _observer.step or _observer.last_loss_tensor is not None:
            _observer.emit_step()
    _observer.write("end", step=_observer.step, duration_s=round(time.time() - _observer.started, 3))
    _observer.close()


def install(run_dir: str, script: str) -> bool:
    """Start observing; False when this process must not report (a non-zero torchrun rank)."""
    global _observer
    if os.environ.get("RANK", "0") != "0":
        return False
    interval = float(os.environ.get(ENV_INTERVAL, "0.05"))
    max_steps = int(os.environ[ENV_MAX_STEPS]) if os.environ.get(ENV_MAX_STEPS) else None
    _observer = Observer(run_dir, interval, max_steps)
    EpochCounter.add_user_file(script)
    try:
        import torch
    except ImportError:
        torch = None
    _observer.write("start", pid=os.getpid(), script=script, argv=sys.argv[1:],
                    world_size=int(os.environ.get("WORLD_SIZE", "1")),
                    torch=getattr(torch, "__version__", None), python=sys.version.split()[0])
    if torch is not None:
        _patch_backward(torch)
        _patch_optimizer(torch)
        _patch_dataloader(torch)
    sys.meta_path.insert(0, _PatchOnImport())
    sys.stdout = _StdoutTap(sys.stdout)
    atexit.register(_finish)
    return True
