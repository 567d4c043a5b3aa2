"""Peak memory of one training step, accounted during the shape run (worker side; stdlib + torch).

The run is on meta: no memory is used, but every storage torch creates has its size. A dispatch
mode (`StorageLedger`) sees each storage when an op makes it and a weak reference tells when it
is freed, so the ledger knows the bytes alive at every moment and keeps, per phase of the step,
the peak and which storages made it. Each storage is then classified:

- weights and buffers: registered on a module (registration hooks);
- gradients: a parameter's `.grad` after backward;
- optimizer state: tensors in `optimizer.state` after a step;
- activations: saved for backward (a `saved_tensors_hooks` pack hook sees each one);
- other: the batch, outputs and temporaries alive at the peak.

The plan leaves `optimizer.step()` out (shapes never need it); where it was, this observer runs
the step of every optimizer the file built whose parameters have gradients, with `foreach`
kernels as on CUDA, so the state and the step's temporaries are measured, not assumed.

Sizes are rounded as the CUDA caching allocator rounds them (512-byte blocks). What the
observer measures is the *first* iteration; `memory_model.steady_state` turns it into the peak
of the iterations after it (optimizer state alive from the start, gradients that persist when
they are zeroed instead of set to None).
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, field
from functools import partial

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten

from torch_lsp.shapes.observe_modules import ModuleCallTree, module_tree

CUDA_BLOCK = 512

# Categories, from the strongest claim to the weakest: a weight saved for backward stays a weight.
WEIGHTS, BUFFERS, GRADS, OPTIMIZER, ACTIVATIONS, OTHER = "weights", "buffers", "grads", "optimizer", "activations", "other"
WORKSPACE = "workspace"  # cuBLAS's, on CUDA (not a tensor: added by memory_report)
# Tensors made before the training loop that are not the model's or the optimizer's (a dataset
# built with torch.randn): in a real run they live in CPU memory, so they are not counted.
HOST = "host"
FORWARD_BACKWARD, STEP = "forward and backward", "optimizer step"
_PRIORITY = {WEIGHTS: 0, BUFFERS: 1, GRADS: 2, OPTIMIZER: 3, ACTIVATIONS: 4, OTHER: 5}


# cuBLAS's workspace, allocated through the caching allocator for each thread that runs a matmul
# (the forward's, and autograd's device thread in backward) and kept: 32 MiB on Hopper (H100,
# H200), 8 MiB elsewhere, plus 1 MiB for cuBLASLt (aten/src/ATen/cuda/CublasHandlePool.cpp).
CUBLAS_WORKSPACE = 32 * 2**20 + 2**20
_CUBLAS_OPS = frozenset(getattr(torch.ops.aten, name) for name in
                        ("mm", "addmm", "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", "_scaled_mm")
                        if hasattr(torch.ops.aten, name))


def cuda_block_bytes(nbytes: int) -> int:
    """What the CUDA caching allocator hands out for a request: 512-byte blocks, nothing for 0."""
    return 0 if nbytes <= 0 else -(-nbytes // CUDA_BLOCK) * CUDA_BLOCK


@dataclass
class Phase:
    name: str
    peak: int
    snapshot: list[tuple[int, int]] = field(default_factory=list)  # (storage id, bytes) at the peak
    dirty: bool = True  # the peak rose since the snapshot was taken


class StorageLedger(TorchDispatchMode):
    """Bytes alive on one device type, with the peak of each phase and what made it."""

    def __init__(self, device_type: str, round_bytes=cuda_block_bytes) -> None:
        super().__init__()
        self.device_type = device_type
        self.round_bytes = round_bytes
        self._live: dict[int, list] = {}  # storage address -> [id, bytes, weakref]
        self.sizes: dict[int, int] = {}  # storage id -> bytes, for the storages alive
        self.total = 0
        self.next_id = 0
        self.phases: list[Phase] = [Phase(FORWARD_BACKWARD, 0)]
        self.matmul_threads: set[str] = set()  # "forward", "backward": where cuBLAS ran
        self.untracked = 0  # outputs the ledger could not account for (exotic tensor subclasses)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        try:
            if func._overloadpacket in _CUBLAS_OPS:
                self.matmul_threads.add("backward" if torch._C._current_autograd_node() is not None else "forward")
            for value in tree_flatten(out)[0]:
                if isinstance(value, torch.Tensor):
                    self.track(value)
        except Exception:  # noqa: BLE001 - accounting must never fail the user's op
            self.untracked += 1
        return out

    # storages ------------------------------------------------------------------------------------

    def track(self, tensor: torch.Tensor) -> int | None:
        """The id of the tensor's storage (registered on first sight), None if not on the device."""
        if tensor.device.type != self.device_type or tensor.is_sparse:
            return None
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensor subclasses without a storage
            return None
        key = storage._cdata
        nbytes = self.round_bytes(storage.nbytes())
        entry = self._live.get(key)
        if entry is not None:
            if entry[1] != nbytes:  # resized in place (`out=` variants)
                self._change(nbytes - entry[1])
                entry[1] = self.sizes[entry[0]] = nbytes
            return entry[0]
        storage_id, self.next_id = self.next_id, self.next_id + 1
        self._live[key] = [storage_id, nbytes, weakref.ref(storage, partial(self._freed, key))]
        self.sizes[storage_id] = nbytes
        self._change(nbytes)
        return storage_id

    def _freed(self, key: int, _ref) -> None:
        entry = self._live.pop(key, None)
        if entry is None:
            return
        self._keep_peak()
        del self.sizes[entry[0]]
        self._change(-entry[1])

    def _change(self, delta: int) -> None:
        self.total += delta
        phase = self.phases[-1]
        if self.total > phase.peak:
            phase.peak = self.total
            phase.dirty = True

    def _keep_peak(self) -> None:
        """About to go down: if this is the phase's peak, remember what is alive."""
        phase = self.phases[-1]
        if phase.dirty:
            phase.snapshot = list(self.sizes.items())
            phase.dirty = False

    # phases --------------------------------------------------------------------------------------

    def begin_phase(self, name: str) -> None:
        self._keep_peak()
        self.phases.append(Phase(name, self.total, list(self.sizes.items()), dirty=False))

    def phase(self, name: str) -> Phase | None:
        self._keep_peak()
        found = [p for p in self.phases if p.name == name]
        return max(found, key=lambda p: p.peak) if found else None


def _never_raises(default=None):
    """An accounting failure is noted in the results, never raised into the user's code."""
    def decorate(method):
        @functools.wraps(method)
        def guarded(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except Exception as error:  # noqa: BLE001
                self.errors.append(f"{method.__name__}: {type(error).__name__}: {error}")
                return default
        return guarded
    return decorate


def create(context) -> "TrainingStepMemory":
    device = context.device.type if context.device is not None else "meta"
    # `exact` counts bytes as requested: comparisons with a CPU run (tests, bench/).
    exact = context.spec.options.get("memory_rounding") == "exact"
    return TrainingStepMemory(module_tree(context), device, (lambda n: n) if exact else cuda_block_bytes)


class TrainingStepMemory:
    """Observer: the memory of the file's training step (see the module docstring).

    `spec.options["batch_size"]` makes the file's DataLoaders yield batches of that size (the
    batch search of memory_fit.py runs the step at several sizes)."""

    name = "memory"

    def __init__(self, tree: ModuleCallTree, device_type: str = "meta", round_bytes=cuda_block_bytes) -> None:
        self.tree = tree
        self.ledger = StorageLedger(device_type, round_bytes)
        self.category: dict[int, str] = {}
        self.saved_by_call: dict[int, int] = {}
        self._saved: set[int] = set()
        self._optimizers: list[weakref.ref] = []
        self._modules: list[weakref.ref] = []
        self._stepped: set[int] = set()
        self.zeroed_to_none: bool | None = None
        self.backward_seen = False
        self.grad_bytes = 0
        self.grads_preallocated = False
        self.step_start_id: int | None = None  # first storage made in the training loop
        self.backward_line: tuple[str, int] | None = None
        self.model_call: int | None = None
        self.steps: list[dict] = []
        self.errors: list[str] = []  # accounting failures (never raised into the user's code)
        self.context = None
        self._undo: list = []

    # observer interface --------------------------------------------------------------------------

    def start(self, ctx) -> None:
        from torch_lsp.shapes import inputs, memory_hooks

        self.context = ctx
        self.tree.start(ctx)
        inputs.set_batch_size(ctx.spec.options.get("batch_size"))
        self.ledger.__enter__()
        self._undo = memory_hooks.install(self)

    def stop(self) -> None:
        from torch_lsp.shapes import inputs

        undo, self._undo = self._undo, []
        for restore in reversed(undo):
            restore()
        try:
            if self.backward_seen:
                self.run_pending_steps()  # a step the plan left out where it could not be found
        finally:
            self.ledger.__exit__(None, None, None)
            inputs.set_batch_size(None)
            self.tree.stop()

    def results(self) -> dict:
        from torch_lsp.shapes.memory_report import measured

        data = measured(self)
        return {path: data for path in self.context.spec.recorded}

    # events, called by memory_hooks --------------------------------------------------------------

    @_never_raises(0)
    def mark(self, tensor: torch.Tensor | None, category: str) -> int:
        """Track `tensor`'s storage as `category` (unless it has a stronger one); its bytes."""
        if tensor is None or not isinstance(tensor, torch.Tensor):
            return 0
        storage_id = self.ledger.track(tensor)
        if storage_id is None:
            return 0
        known = self.category.get(storage_id)
        if known is None or _PRIORITY[category] < _PRIORITY[known]:
            self.category[storage_id] = category
        return self.ledger.sizes.get(storage_id, 0)

    @_never_raises()
    def saved_for_backward(self, tensor: torch.Tensor) -> None:
        storage_id = self.ledger.track(tensor) if isinstance(tensor, torch.Tensor) else None
        if storage_id is None or storage_id in self._saved:
            return
        self._saved.add(storage_id)
        self.mark(tensor, ACTIVATIONS)
        call = self.tree.current
        nbytes = self.ledger.sizes.get(storage_id, 0)
        while call is not None:  # a call's activations include those of the calls inside it
            self.saved_by_call[call.index] = self.saved_by_call.get(call.index, 0) + nbytes
            call = self.tree.calls[call.parent] if call.parent is not None else None

    @_never_raises()
    def module_seen(self, module: torch.nn.Module) -> None:
        self._modules.append(weakref.ref(module))

    @_never_raises()
    def module_called(self, module: torch.nn.Module) -> None:
        """A module built before the run started: its parameters and buffers, now."""
        self.module_seen(module)
        for value in _own_parameters(module):
            self.mark(value, WEIGHTS)
        for value in module._buffers.values():
            self.mark(value, BUFFERS)

    @_never_raises()
    def optimizer_built(self, optimizer) -> None:
        self._optimizers.append(weakref.ref(optimizer))

    @_never_raises()
    def zero_grad_called(self, set_to_none: bool) -> None:
        # Gradients survive into the next forward unless every zero_grad sets them to None.
        self.zeroed_to_none = set_to_none if self.zeroed_to_none is None else (self.zeroed_to_none and set_to_none)

    @_never_raises()
    def loop_starts(self) -> None:
        if self.step_start_id is None:
            self.step_start_id = self.ledger.next_id

    @_never_raises()
    def backward_starts(self, line: tuple[str, int] | None) -> None:
        if self.backward_seen:
            return
        self.backward_line = line
        self.model_call = self._last_model_call()
        if self.zeroed_to_none is False:
            self._gradients_from_a_previous_step()

    def _gradients_from_a_previous_step(self) -> None:
        """`zero_grad(set_to_none=False)`: from the second iteration on, backward adds into
        gradients that exist (each new one is a temporary). Make the first iteration do the same."""
        with torch.no_grad(), torch._C.DisableTorchFunction():
            for parameter in self.parameters():
                if parameter.requires_grad and parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
        self.grads_preallocated = True

    @_never_raises()
    def backward_done(self) -> None:
        grads = {}
        for parameter in self.parameters():
            self.mark(parameter, WEIGHTS)
            if parameter.grad is not None:
                grads[self.ledger.track(parameter.grad)] = self.mark(parameter.grad, GRADS)
        if not self.backward_seen:
            self.grad_bytes = sum(grads.values())
            self.backward_seen = True
            self.ledger.begin_phase("after backward")

    @_never_raises()
    def run_pending_steps(self) -> None:
        """Step every optimizer whose parameters have gradients, as `optimizer.step()` would."""
        for optimizer in self.optimizers():
            if id(optimizer) in self._stepped or not _has_grads(optimizer):
                continue
            self._stepped.add(id(optimizer))
            self.ledger.begin_phase(STEP)
            self.steps.append(_step(optimizer, self))
            self.ledger.begin_phase("after step")

    # queries -------------------------------------------------------------------------------------

    def optimizers(self) -> list:
        return [o for o in (ref() for ref in self._optimizers) if o is not None]

    def parameters(self) -> list[torch.nn.Parameter]:
        seen: dict[int, torch.nn.Parameter] = {}
        for module in (ref() for ref in self._modules):
            if module is not None:
                for parameter in _own_parameters(module):
                    seen.setdefault(id(parameter), parameter)
        for optimizer in self.optimizers():
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    seen.setdefault(id(parameter), parameter)
        return list(seen.values())

    def _last_model_call(self) -> int | None:
        """The outermost call with trainable parameters made before backward: the model."""
        for call in reversed(self.tree.calls):
            if call.parent is None and any(p.requires_grad for m in call.module.modules() for p in _own_parameters(m)):
                return call.index
        return None


def _own_parameters(module: torch.nn.Module) -> list:
    """The parameters a module holds itself (its `_parameters`: a user `parameters()` may raise)."""
    return [p for p in module._parameters.values() if p is not None]


def _has_grads(optimizer) -> bool:
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


def _step(optimizer, observer: TrainingStepMemory) -> dict:
    """Run one step with the kernels CUDA would use (foreach unless the file chose otherwise)."""
    kind = type(optimizer).__name__
    forced = []
    for group in optimizer.param_groups:
        if group.get("foreach") is None and not group.get("fused"):
            group["foreach"] = True
            forced.append(group)
    error = None
    try:
        # Only the ledger watches the step: no shapes to record, no FLOPs worth counting (Adam on
        # meta already takes ~0.2 s for a resnet50; each extra mode costs as much again).
        with torch._C.DisableTorchFunction(), _disable_current_modes(), observer.ledger:
            optimizer.step()
    except Exception as exc:  # noqa: BLE001 - an exotic optimizer on meta: accounted from its type instead
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        for group in forced:
            group["foreach"] = None
    state_bytes = 0
    for state in optimizer.state.values():
        for value in state.values():
            state_bytes += observer.mark(value, OPTIMIZER) if isinstance(value, torch.Tensor) else 0
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    return {"type": kind, "ran": error is None, "error": error, "state_bytes": state_bytes,
            "param_bytes": sum(p.numel() * p.element_size() for p in params),
            "state_per_param": _state_tensors_per_param(optimizer)}


def _state_tensors_per_param(optimizer) -> float:
    """Full-size state tensors per parameter by the optimizer's type and settings (SGD with
    momentum: 1, Adam/AdamW: 2, 3 with amsgrad), for when the step cannot run."""
    group = optimizer.param_groups[0] if optimizer.param_groups else {}
    # A subclass of a torch optimizer keeps its parent's state.
    kind = next((cls.__name__ for cls in type(optimizer).__mro__ if cls.__module__.startswith("torch.optim")),
                type(optimizer).__name__)
    if kind == "SGD":
        return 1.0 if group.get("momentum", 0) else 0.0
    if kind in ("Adam", "AdamW", "NAdam", "RAdam", "Adamax"):
        return 3.0 if group.get("amsgrad") else 2.0
    if kind == "RMSprop":
        return 1.0 + bool(group.get("momentum", 0)) + bool(group.get("centered"))
    if kind in ("Adagrad", "Rprop", "ASGD", "Adadelta"):
        return 2.0 if kind in ("Rprop", "Adadelta") else 1.0
    return 2.0  # unknown optimizers: as Adam, the common case
