"""The shape job's module hooks: one global pair for the recorder and explain's tracker, taken
off while a library model runs.

With any global forward hook registered, every module call takes the slow path of torch's
`Module._call_impl` (hook lists built, `torch.compiler.is_compiling()` asked, a nested function
called) and runs the hooks. Inside a library model (`Recorder.module_pre_hook`: no layer of its
subtree is the user's) neither hook has anything to do: the line tracer is off, only the
model's own output is shown. So the pair steps off torch's global hook tables for that call,
and the model's own always-called forward hook puts it back: its layers' calls take torch's
fast path (resnet50's forward in a job: ~1 ms less, of ~2 ms the job added).

The tracker then does not see those layers enter and leave. Where one fails, the exception's
traceback still has them, outermost first (`calls_raised_through`: each `_call_impl` frame
holds its module and inputs), which is all explain and `replay_failed_call` need. Other global
hooks (the cost observers', the user's) stay where they are.
"""

from __future__ import annotations

import sys
from typing import Any

from torch.nn.modules import module as nn_module

from torch_lsp.shapes.explain.tracking import CallTracker, calls_raised_through, failure_through


class JobModuleHooks:
    """`install()` registers the pair, `remove()` takes everything off again (the job's end,
    however it ended: a timeout inside a library model runs no hook)."""

    def __init__(self, recorder, tracker: CallTracker | None) -> None:
        self.recorder = recorder
        self.tracker = tracker
        self._handles: list = []
        self._model_handles: dict[int, Any] = {}  # id(library model) -> its own forward hook's handle
        self._lifted_for: Any = None  # the library model whose call runs without the pair

    def install(self) -> None:
        self._handles = [nn_module.register_module_forward_pre_hook(self._before),
                         nn_module.register_module_forward_hook(self._after, always_call=True)]

    def remove(self) -> None:
        self._put_back()
        for handle in (*self._handles, *self._model_handles.values()):
            handle.remove()
        self._handles, self._model_handles = [], {}

    def _before(self, module, inputs) -> None:
        if self.tracker is not None:
            self.tracker.enter(module, inputs)
        # A layer without layers under it (`Conv2d` in the user's model) has nothing to gain.
        if self.recorder.module_pre_hook(module, inputs, sys._getframe(1)) and module._modules \
                and self._lifted_for is None:
            self._lift(module)

    def _after(self, module, inputs, output) -> None:
        self._ended(module, output, failure_through(sys._getframe(1)), ())

    def _model_ended(self, module, inputs, output) -> None:
        """The library model's own hook: the only one that runs for its call's end."""
        if module is not self._lifted_for:
            return  # a later call of the same model, the pair on: `_after` has run
        self._put_back()
        failed = failure_through(sys._getframe(1))
        self._ended(module, output, failed, calls_raised_through(failed, module) if failed is not None else ())

    def _ended(self, module, output, failed: BaseException | None, inner: tuple) -> None:
        if self.tracker is not None:
            self.tracker.leave(module, failed, inner)
        self.recorder.module_hook(module, output, failed)

    def _lift(self, module) -> None:
        # Inside `_call_impl`'s loop over a copy of the pre-hooks: taking them off here is safe.
        nn_module._global_forward_pre_hooks.pop(self._handles[0].id, None)
        nn_module._global_forward_hooks.pop(self._handles[1].id, None)
        self._lifted_for = module
        # Kept until the job's end: removing it from inside itself would change the dict torch's
        # except block iterates. Keyed by id, so checked: a freed model's id goes to a new one.
        handle = self._model_handles.get(id(module))
        if handle is None or handle.id not in module._forward_hooks:
            self._model_handles[id(module)] = module.register_forward_hook(self._model_ended, always_call=True)

    def _put_back(self) -> None:
        if self._lifted_for is None:
            return
        self._lifted_for = None
        for table, handle, hook in ((nn_module._global_forward_pre_hooks, self._handles[0], self._before),
                                    (nn_module._global_forward_hooks, self._handles[1], self._after)):
            table[handle.id] = hook
            for key in sorted(key for key in table if key > handle.id):  # registration order
                table.move_to_end(key)
