"""The job's recording mode steps off torch's mode stack while library code runs that needs
none of its work.

`tracer.RecordingMode` sees every torch call of a job: it moves tensors and factories to the
job's device, turns `.item()` inside a training loop into a placeholder, records outputs for the
user's expressions and feeds explain's tracker the call that failed. Building torchvision's
resnet50 makes ~1,800 torch calls (every parameter's `empty`, `kaiming_uniform_`, `fill_`) and
its forward ~200; through a Python `__torch_function__` each costs microseconds, 8 ms of a
30 ms job against 19 ms for the bare build and forward. Inside a library layer's constructor
given only library values, or a library model's forward given only tensors on the job's
device, there is nothing for the mode to do:

- factories without a device still land on the job's device: the job's `torch.device(...)`
  mode stays on the stack below (a default device the user set keeps the recording mode);
- no value of another device comes in (arguments holding tensors, devices or device names keep
  the mode), and no user line runs inside (the line tracer is off there for the same reason);
- nothing is recorded there (constructors' tensors are parameters; a library model's layers are
  not shown, only its output, recorded when it returns);
- `.item()` keeps its placeholder: inside a training loop the mode stays.

A failure inside a library model's forward is replayed once with the mode back on (its innermost
layer, given the inputs it had) so that explain's tracker has the torch call that failed; a
failure in a constructor has no torch call recorded (its message and the user's line are).

A constructor left by an exception whose traceback the user keeps would keep the mode aside
until it is freed (the line tracer is off as long); the job's end puts it back in any case.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch
from torch.utils._device import DeviceContext
from torch._C import _get_function_stack_at, _len_torch_function_stack, _pop_torch_function_stack, \
    _push_on_torch_function_stack

_DEVICE_NAMES = frozenset({"cpu", "cuda", "meta", "mps", "xpu", "hpu", "xla", "privateuseone"})
_MAX_ITEMS = 64  # larger containers are not walked: they keep the mode


class ModeAside:
    """Takes the job's recording mode off the top of the mode stack for one owner at a time
    (a constructor's serial, a library model) and puts it back for that owner."""

    def __init__(self, device: torch.device, in_training_loop: Callable[[Any], bool]) -> None:
        self.device = device
        self._in_training_loop = in_training_loop  # called with the frame to look from
        self.mode = None  # the RecordingMode on the stack, between its __enter__ and __exit__
        self.owner: Any = None

    def attach(self, mode) -> None:
        self.mode, self.owner = mode, None

    def detach(self) -> None:
        """The mode leaves the stack: put back first, so that its `__exit__` pops itself."""
        self.come_back(self.owner)
        self.mode = None

    @property
    def aside(self) -> bool:
        return self.owner is not None

    def step_aside(self, owner: Any, values, frame) -> bool:
        """Off the stack for `owner` if the mode is on top and `values` need none of its work."""
        mode = self.mode
        if mode is None or self.owner is not None or owner is None:
            return False
        depth = _len_torch_function_stack()
        if not depth or _get_function_stack_at(depth - 1) is not mode:
            return False  # another mode above it (the user's, autocast's): leave the stack alone
        for index in range(depth - 1):  # `torch.set_default_device("cuda")` sits below it
            below = _get_function_stack_at(index)
            if isinstance(below, DeviceContext) and below.device != self.device:
                return False
        with torch._C.DisableTorchFunction():  # `.device` reads would pass through the modes
            plain = all(self.plain(value) for value in values)
        if not plain or self._in_training_loop(frame):
            return False
        _pop_torch_function_stack()
        self.owner = owner
        return True

    def come_back(self, owner: Any) -> None:
        if owner is not None and self.owner is owner and self.mode is not None:
            _push_on_torch_function_stack(self.mode)
            self.owner = None

    def plain(self, value: Any, depth: int = 0) -> bool:
        """Nothing in `value` the mode would move or retarget: tensors already on the job's
        device (plain ones: a subclass has a `__torch_function__` of its own), no devices or
        device names."""
        if value is None or isinstance(value, (bool, int, float, torch.dtype, torch.Size)):
            return True
        if isinstance(value, torch.Tensor):
            return type(value) in (torch.Tensor, torch.nn.Parameter) and value.device == self.device
        if isinstance(value, torch.device):
            return False
        if isinstance(value, str):
            return value.split(":")[0] not in _DEVICE_NAMES
        if isinstance(value, (list, tuple, dict)):
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            if depth > 2 or len(items) > _MAX_ITEMS:
                return False
            return all(self.plain(item, depth + 1) for item in items)
        return not hasattr(value, "__torch_function__")  # modules, functions, enums, layouts


def replay_failed_call(tracker, error: BaseException) -> None:
    """Give explain's tracker the torch call that raised `error` inside a library model run with
    the mode aside: the innermost layer runs again on the inputs it had, with the mode back on.
    Kept only if it fails the same way (same type, same message)."""
    if tracker is None or tracker.call_at_failure(error) is not None:
        return
    modules = tracker.modules_at_failure(error)
    if not modules:
        return
    innermost = modules[-1]
    trace = sys.gettrace()
    sys.settrace(None)  # library code only: nothing of the user's runs or is recorded
    try:
        innermost.module.forward(*innermost.inputs)
    except Exception as again:  # noqa: BLE001 - the failure is what is looked for
        call = tracker.call_at_failure(again)
        if call is not None and type(again) is type(error) and str(again) == str(error):
            tracker.record_failure(error, call.func, call.args, call.kwargs)
    finally:
        sys.settrace(trace)
