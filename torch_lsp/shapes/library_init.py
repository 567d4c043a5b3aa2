"""Library layers are built without the line tracer.

The line tracer is a global trace function, so CPython calls it for every Python frame that
opens while it is set, library frames included, and makes a frame object for each. Torch calls
already run untraced (`tracer.RecordingMode`), but building torchvision's resnet50 still opened
~16,000 frames outside them (every layer's `__init__`, `Module.__setattr__`, `Parameter.__new__`):
~8 ms of a ~100 ms shape job spent saying "not a user file". No line of the
user's files runs inside a library layer's constructor unless the constructor is handed user
code (`norm_layer=MyNorm`, a lambda) or builds a user subclass, so for a library `nn.Module`'s
`__init__` given only library values the trace function is switched off at its call event and
switched back on when its frame is freed: a sentinel placed in the frame's locals dict is freed
with the frame at its return. A frame left by an exception lives on in its traceback (explain's
record of failed torch calls keeps it): tracing then comes back at the first torch call a user
line makes, with that line's statement. Where the recording mode stepped aside for the
constructor too (`mode_aside`: no torch call reaches it then), at the first module call.

Python 3.11 has no cheaper hook (3.12's `sys.monitoring` can disable events per code object).
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
from types import FrameType
from typing import Any, Callable

import torch

_KEY = " torch-lsp: tracing resumes when this frame is freed"  # not an identifier: no name clashes
_SIMPLE = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size,
           torch.layout, torch.memory_format)
_MAX_ITEMS = 64  # containers larger than this are assumed to hold user code: traced as before


class LibraryInit:
    """Switches the line tracer off around library layers' constructors (see the module doc).

    `user_files` is the job's set (or dict) of recorded files; it may grow while the job runs.
    `forget` drops the statement a user frame was in the middle of (its targets keep their old
    values when the call did not return normally); `rejoin` traces a user frame again from the
    middle of its current statement."""

    def __init__(self, user_files, forget: Callable[[FrameType], None], rejoin: Callable[[FrameType], None],
                 aside=None) -> None:
        self.user_files = user_files
        self.forget, self.rejoin = forget, rejoin
        self.aside = aside  # mode_aside.ModeAside: the recording mode steps aside too, when it may
        self.active = False
        # While a constructor runs untraced: (its sentinel's serial, the user frames below it with
        # their positions, the trace function to put back, its frame's id). No reference to the
        # sentinel or the frame itself.
        self.pending: tuple[int, list, Any] | None = None
        self._serial = 0
        self._user_classes: dict[type, bool] = {}

    def open(self) -> None:
        self.active = True

    def close(self) -> None:
        """Tracing is over: a sentinel freed later (a traceback kept by the user) changes nothing."""
        self.active = False
        self.pending = None

    def enter(self, frame: FrameType) -> None:
        """Called with the call event of a library frame named `__init__`."""
        if self.pending is not None or not self.active:
            return
        try:
            arguments = self._library_only(frame)
        except Exception:  # noqa: BLE001 - a value that cannot be inspected: trace as before
            return
        if arguments is None:
            return
        callers = []  # the user frames below: their statements are in progress
        caller = frame.f_back
        for _ in range(256):
            if caller is None:
                break
            if caller.f_code.co_filename in self.user_files:
                callers.append((caller, caller.f_lasti))
            caller = caller.f_back
        self._serial += 1
        self.pending = (self._serial, callers, sys.gettrace(), id(frame))
        frame.f_locals[_KEY] = _Resume(self, self._serial)
        sys.settrace(None)
        if self.aside is not None:
            self.aside.step_aside(self.pending, arguments, frame.f_back)

    def resume(self, serial: int) -> None:
        """The constructor's frame was freed."""
        if self.pending is not None and self.pending[0] == serial:
            self._resume()

    def torch_called_from(self, frame: FrameType) -> None:
        """A user file calls torch while tracing is off: the constructor was left by an exception
        whose traceback (and so the constructor's frame) is still kept, by the user or by explain's
        record of failed torch calls. Trace again from the statement making this call."""
        if self.pending is not None and frame.f_code.co_filename in self.user_files:
            self._resume()
            if self.active:
                self.rejoin(frame)

    def module_called(self, frame: FrameType) -> None:
        """A module is called (`frame`: torch's `_call_impl`) while a constructor runs untraced.
        If that constructor is no longer running, it was left by an exception whose traceback is
        kept, and the recording mode, stepped aside, saw no torch call of a user line: trace again
        from the user's line making this call."""
        constructor = self.pending[3]
        user = None
        while frame is not None:
            if id(frame) == constructor:
                return  # still inside it: a library constructor running a layer
            if user is None and frame.f_code.co_filename in self.user_files:
                user = frame
            frame = frame.f_back
        if user is not None:
            self.torch_called_from(user)

    def _resume(self) -> None:
        if self.aside is not None:
            self.aside.come_back(self.pending)
        _, callers, trace, _ = self.pending
        self.pending = None
        if not self.active:
            return
        on_stack = set()
        frame = sys._getframe(1)
        while frame is not None:
            on_stack.add(id(frame))
            frame = frame.f_back
        for caller, lasti in callers:
            # Left by an exception: a frame that caught it (or was left by it) did not finish its
            # statement, and its exception event was not seen.
            if id(caller) not in on_stack or caller.f_lasti != lasti:
                self.forget(caller)
        sys.settrace(trace)

    def _library_only(self, frame: FrameType) -> list | None:
        """The arguments (but `self`) of a library layer's constructor handed nothing that may
        run user code; None for any other constructor."""
        code = frame.f_code
        if not code.co_argcount:
            return None
        values = frame.f_locals
        count = code.co_argcount + code.co_kwonlyargcount
        count += bool(code.co_flags & inspect.CO_VARARGS) + bool(code.co_flags & inspect.CO_VARKEYWORDS)
        names = code.co_varnames[:count]
        layer = values.get(names[0])
        if not isinstance(layer, torch.nn.Module) or self._user_class(type(layer)):
            return None
        arguments = [values.get(name) for name in names[1:]]
        return None if any(self._may_hold_user_code(value) for value in arguments) else arguments

    # -- whose code a value may run ----------------------------------------------------------

    def _user_file(self, filename: str) -> bool:
        return filename in self.user_files or filename.startswith("<")  # exec'd code: assume the user's

    def _user_class(self, kind: type) -> bool:
        """Whether a method of the class or of a base is the user's: what a library constructor
        calls on `self` (an overridden `_make_layer`) may then be user code."""
        known = self._user_classes.get(kind)
        if known is None:
            known = self._user_classes[kind] = any(
                self._user_file(code.co_filename) for cls in kind.__mro__ for code in _codes(cls))
        return known

    def _may_hold_user_code(self, value: Any, depth: int = 0) -> bool:
        if isinstance(value, _SIMPLE):
            return False
        if isinstance(value, (list, tuple, set, frozenset, dict)):
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else list(value)
            if depth > 2 or len(items) > _MAX_ITEMS:
                return True
            return any(self._may_hold_user_code(item, depth + 1) for item in items)
        if isinstance(value, types.MethodType):  # bound: its object's class counts too
            return self._may_hold_user_code(value.__func__, depth + 1) or self._may_hold_user_code(value.__self__, depth + 1)
        if isinstance(value, types.BuiltinMethodType):
            owner = value.__self__
            return owner is not None and not isinstance(owner, types.ModuleType) and self._may_hold_user_code(owner, depth + 1)
        if isinstance(value, types.FunctionType):  # functions and lambdas
            return self._user_file(value.__code__.co_filename)
        if isinstance(value, types.GeneratorType):
            return self._user_file(value.gi_code.co_filename)
        if isinstance(value, type):
            return self._user_class(value)
        if isinstance(value, functools.partial):  # torchvision's `norm_layer=partial(nn.LayerNorm, eps=1e-6)`
            return any(self._may_hold_user_code(item, depth + 1)
                       for item in (value.func, *value.args, *value.keywords.values()))
        if callable(value) and not isinstance(value, torch.nn.Module):
            return True  # partials, callable objects: what they call is not known cheaply
        return self._user_class(type(value))


def _codes(cls: type):
    """The code objects of a class's own methods, properties included."""
    for member in vars(cls).values():
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property):
            yield from (f.__code__ for f in (member.fget, member.fset, member.fdel) if hasattr(f, "__code__"))
        elif isinstance(member, types.FunctionType):
            yield member.__code__


class _Resume:
    """Lives in a library constructor's locals; freed with its frame."""

    __slots__ = ("owner", "serial")

    def __init__(self, owner: LibraryInit, serial: int) -> None:
        self.owner, self.serial = owner, serial

    def __del__(self) -> None:
        self.owner.resume(self.serial)
