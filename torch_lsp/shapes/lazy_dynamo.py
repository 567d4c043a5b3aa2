"""Shape jobs without importing dynamo until something needs it (worker side; torch only).

Torch's eager code imports `torch._dynamo` (0.5 s, 76 MB of the worker's 583 at start-up) for
calls that do nothing outside a compiled region: ~290 functions wrapped in
`torch._disable_dynamo` (nearly every `torch._refs` reference and decomposition) import it on
their first call to make a wrapper that turns dynamo's frame evaluation off around the call,
and every optimizer's `step` imports it to call `torch._dynamo.graph_break()`. The worker used to
import dynamo up front for those, or every job's fork would have imported it again. Shape jobs
never compile (`guards` makes `torch.compile` return the model), so `install()` puts a stand-in
in `sys.modules` that answers those calls as dynamo does outside compilation (`disable(fn)` is
`fn`, `graph_break()` nothing, `is_compiling()` False) and imports the real module the moment
anything else of it is used (`torch._dynamo.config`, a submodule; `torch._dynamo.utils`, which
torchvision imports for one function, has a stand-in of its own that imports the real modules
when that function is called). A job's fork that had to import it tells the worker, which
imports it for the jobs after (`worker._imports_for`): each such import costs one job once.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from torch_lsp.shapes.stand_in_modules import RealForSubmodules, describe, import_in_place_of, is_real

NAME = "torch._dynamo"


class _StandIn(types.ModuleType):
    """`torch._dynamo` until more of it than this is needed."""

    def __getattr__(self, name: str):
        if name.startswith("__"):  # probes of every module (inspect.getmodule, pickling) load nothing
            raise AttributeError(name)
        return getattr(import_real(), name)

    @staticmethod
    def disable(fn=None, recursive=True, *, reason=None, wrapping=True):
        return fn if fn is not None else (lambda function: function)

    @staticmethod
    def graph_break(msg: str = "") -> None:
        return None

    @staticmethod
    def is_compiling() -> bool:
        return False


class _UtilsStandIn(types.ModuleType):
    """`torch._dynamo.utils` as torchvision imports it (`ops/roi_align.py`: one function, which
    `roi_align` calls): anything of it imports the real modules."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        import_real()
        return getattr(importlib.import_module(UTILS), name)

    @staticmethod
    def is_compile_supported(device_type):
        import_real()
        return importlib.import_module(UTILS).is_compile_supported(device_type)


UTILS = NAME + ".utils"


def install() -> bool:
    """Put the stand-in in place (once, before any job); False when dynamo is imported already
    or torch has no such module."""
    if NAME in sys.modules:
        return isinstance(sys.modules[NAME], _StandIn)
    import torch

    spec = importlib.util.find_spec(NAME)
    if spec is None or not spec.submodule_search_locations:
        return False
    stand_in = _StandIn(NAME, "torch-lsp's stand-in: the real module is imported when more is needed")
    stand_in.__path__ = list(spec.submodule_search_locations)  # submodules are found (see the finder)
    describe(stand_in, spec)
    stand_in.__package__ = NAME
    sys.modules[NAME] = stand_in
    torch._dynamo = stand_in
    # `torch._dynamo.utils` gets a stand-in of its own while nothing real has been needed.
    sys.meta_path.insert(0, RealForSubmodules(NAME, _StandIn, import_real,
                                              own={UTILS: lambda: _UtilsStandIn(UTILS, _UtilsStandIn.__doc__)}))
    return True


def imported() -> bool:
    """Is the real module imported (in this process)?"""
    return is_real(NAME, _StandIn)


def import_real() -> types.ModuleType:
    """The real module, imported now if it is not yet."""
    if is_real(NAME, _StandIn):
        return sys.modules[NAME]
    utils = sys.modules.pop(UTILS, None) if isinstance(sys.modules.get(UTILS), _UtilsStandIn) else None
    try:
        return import_in_place_of(NAME, _StandIn)
    except BaseException:
        if utils is not None and isinstance(sys.modules.get(NAME), _StandIn):
            sys.modules[UTILS] = utils  # as it was, with the package's stand-in
        raise
