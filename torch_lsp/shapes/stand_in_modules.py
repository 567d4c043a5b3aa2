"""What the worker's stand-in modules share (lazy_dynamo.py, lazy_symbolic.py): a loader that
hands out a module that exists already, the swap of a stand-in for the real module, and the
finder that imports the real package when one of its submodules is imported."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import sys
import types
from typing import Callable

log = logging.getLogger(__name__)


class Loaded(importlib.abc.Loader):
    """Hands out a module that exists already (a stand-in, or one a real import brought)."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module = module

    def create_module(self, spec):
        return self.module

    def exec_module(self, module) -> None:
        return None


def describe(stand_in: types.ModuleType, spec) -> None:
    """Give a stand-in the real module's spec, loader and file (what tools that look a module
    up expect to find)."""
    stand_in.__spec__, stand_in.__loader__, stand_in.__file__ = spec, spec.loader, spec.origin


def is_real(name: str, stand_in_type: type) -> bool:
    """Is the real module `name` imported (in this process)?"""
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, stand_in_type)


def import_in_place_of(name: str, stand_in_type: type) -> types.ModuleType:
    """The real module `name`, imported now in place of its stand-in if it is not yet; when the
    import fails the stand-in stays, so that the next use tries again."""
    module = sys.modules.get(name)
    if module is not None and not isinstance(module, stand_in_type):
        return module
    stand_in = sys.modules.pop(name, None)
    try:
        real = importlib.import_module(name)
    except BaseException:
        if stand_in is not None and name not in sys.modules:
            sys.modules[name] = stand_in
        raise
    log.debug("%s imported", name)
    return real


class RealForSubmodules(importlib.abc.MetaPathFinder):
    """A submodule of `package` imported while the package's stand-in (a `stand_in_type`) is in
    place: the real package first (`import_real`), then the submodule as that import left it,
    or as the other finders find it. A submodule named in `own` gets the stand-in `own` makes
    for it instead, while nothing real has been needed."""

    def __init__(self, package: str, stand_in_type: type, import_real: Callable[[], types.ModuleType],
                 own: dict[str, Callable[[], types.ModuleType]] | None = None) -> None:
        self.package, self.stand_in_type, self.import_real, self.own = package, stand_in_type, import_real, own or {}

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith(self.package + ".") or not isinstance(sys.modules.get(self.package), self.stand_in_type):
            return None
        if fullname in self.own:
            return importlib.util.spec_from_loader(fullname, Loaded(self.own[fullname]()))
        self.import_real()
        module = sys.modules.get(fullname)  # imported with the package: hand that one out
        return importlib.util.spec_from_loader(fullname, Loaded(module)) if module is not None else None
