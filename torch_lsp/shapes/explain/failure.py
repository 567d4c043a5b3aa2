"""What ``explain`` knows about one failure: torch's text, the failing call, the modules
that were running and their names, and small formatting helpers shared by the families."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any

from torch_lsp.shapes.explain.tracking import CallTracker, ModuleCall, TorchCall, shape_of


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def fmt(shape: Any) -> str:
    return "[" + ", ".join(str(size) for size in shape) + "]" if shape is not None else "[?]"


def grid(sizes: Any) -> str:
    return "x".join(str(size) for size in sizes)


def module_kind(module: Any) -> str:
    cls = type(module)
    prefix = "nn." if cls.__module__.startswith("torch.nn") else ""
    return prefix + cls.__name__


@dataclass
class Failure:
    exc: BaseException
    text: str
    call: TorchCall | None
    modules: tuple[ModuleCall, ...]
    names: list[str]

    @classmethod
    def build(cls, exc: BaseException, tracker: CallTracker | None) -> "Failure":
        call = tracker.call_at_failure(exc) if tracker else None
        modules = tracker.modules_at_failure(exc) if tracker else ()
        return cls(exc, str(exc), call, modules, _module_names(exc, modules))

    def has(self, pattern: str) -> re.Match | None:
        return re.search(pattern, self.text)

    @property
    def innermost(self) -> ModuleCall | None:
        """The layer to blame: the innermost module running, unless it is the user's own
        module calling a torch function directly (then the function is to blame)."""
        if not self.modules:
            return None
        module = self.modules[-1]
        if self.call is not None and not _is_library_class(type(module.module)):
            return None
        return module

    def innermost_is(self, *class_names: str) -> bool:
        module = self.innermost
        return module is not None and any(
            base.__name__ in class_names for base in type(module.module).__mro__
        )

    def call_is(self, *names: str) -> bool:
        return self.call is not None and self.call.name in names

    def who(self) -> str:
        """``fc1 (nn.Linear)``; or the failing function's name when no module ran."""
        if self.innermost is not None:
            kind = module_kind(self.innermost.module)
            name = self.names[-1]
            return f"{name} ({kind})" if name else kind
        return self.call.name.strip("_") if self.call else "torch"

    def module_input(self, index: int = 0) -> Any:
        module = self.innermost
        if module is not None and len(module.inputs) > index:
            return module.inputs[index]
        if self.call is not None and len(self.call.args) > index:
            return self.call.args[index]
        return None

    def tensors_in_call(self) -> list[Any]:
        if self.call is None:
            return []
        values = list(self.call.args) + list(self.call.kwargs.values())
        flat = []
        for value in values:
            flat.extend(value if isinstance(value, (list, tuple)) else [value])
        return [value for value in flat if shape_of(value) is not None]


def _module_names(exc: BaseException, modules: tuple[ModuleCall, ...]) -> list[str]:
    """Attribute path of each module relative to the outermost one (``layer1.0.conv1``)."""
    if not modules:
        return []
    root = modules[0].module
    try:
        paths = {id(module): path for path, module in root.named_modules()}
    except Exception:
        paths = {}
    names = []
    for call in modules:
        path = paths.get(id(call.module), "")
        names.append(path or _variable_name(exc, call.module))
    return names


def _variable_name(exc: BaseException, obj: Any) -> str:
    """The name the user's code gave ``obj`` (``fc``, ``criterion``, ``self.attn``)."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        if is_library_file(frame.f_code.co_filename):
            continue
        for name, value in frame.f_locals.items():
            if value is obj and name != "self":
                return name
        owner = frame.f_locals.get("self")
        children = getattr(owner, "_modules", None)
        if isinstance(children, dict):
            for name, child in children.items():
                if child is obj:
                    return name
    return ""


def _is_library_class(cls: type) -> bool:
    # Where forward was written, not inspect.getfile(cls): classes of exec'd user code report
    # module "__main__", whose file is the host process's script.
    code = getattr(getattr(cls, "forward", None), "__code__", None)
    return code is not None and is_library_file(code.co_filename)


def is_library_file(filename: str) -> bool:
    """True for torch's, torchvision's and other installed packages' files, not the user's."""
    path = os.path.abspath(filename)
    return any(path.startswith(root) for root in _library_roots())


@functools.cache
def _library_roots() -> tuple[str, ...]:
    import sysconfig

    import torch

    roots = {os.path.dirname(os.path.dirname(torch.__file__))}
    for key in ("purelib", "platlib", "stdlib", "platstdlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(path)
    return tuple(os.path.join(root, "") for root in roots)
