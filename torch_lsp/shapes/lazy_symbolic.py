"""Shape jobs without sympy until a size is symbolic (worker side; torch only).

Torch's Python meta kernels and references import `torch.fx.experimental.symbolic_shapes`, and
sympy with it, on their first call: guards on sizes (`guard_or_false(a == 1)`, `expect_true`,
`statically_known_true`) and type promotion's `isinstance(x, sympy.Basic)`. That is 0.31 s of
the worker's start-up and ~35 MB, every time, although a shape job's sizes are plain ints, for
which each guard returns its argument. `install()` puts two stand-ins in `sys.modules`:

- `torch.fx.experimental.symbolic_shapes`, whose guards and questions answer plain values as the
  real ones do (`type(a) is bool`: `a`) and hand anything else (a `SymInt`, a `SymBool`, a wrong
  type whose error the real function words) to the real module, imported then; any other name
  of it (`ShapeEnv`, an exception class) imports the real module too;
- `sympy`, whose `Basic` is, while sympy is not imported, a class nothing is an instance of
  (nothing can be: every sympy object is made by sympy), read by a function; anything else of
  it, a submodule, or `Basic` read where it would be kept (an import statement, a module's top
  level, a class body), imports the real sympy.

Real symbolic sizes need a `ShapeEnv`, which only the real module makes, so a job that has them
has imported it. As with dynamo (lazy_dynamo.py), a job's fork that had to import them tells
the worker, which imports them for the jobs after.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import operator
import sys
import types

from torch_lsp.shapes.stand_in_modules import RealForSubmodules, describe, import_in_place_of, is_real

NAME = "torch.fx.experimental.symbolic_shapes"
SYMPY = "sympy"
_PLAIN_SCALARS = (bool, int, float)


def _real(name: str):
    return getattr(import_real(), name)


class _ShapesStandIn(types.ModuleType):
    """`torch.fx.experimental.symbolic_shapes` while every size is a plain int."""

    def __getattr__(self, name: str):
        if name.startswith("__") and name != "__all__":  # probes of every module load nothing; `import *` does
            raise AttributeError(name)
        return _real(name)

    @staticmethod
    def expect_true(a, skip: int = 0):
        return a if type(a) is bool else _real("expect_true")(a, skip + 1)  # one frame more: this one

    # Combinators: the real ones are these operators, whatever the operands.
    @staticmethod
    def sym_and(x, *others):
        for y in others:
            x = operator.and_(x, y)
        return x

    @staticmethod
    def sym_or(x, *others):
        for y in others:
            x = operator.or_(x, y)
        return x

    @staticmethod
    def sym_eq(x, y):
        if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
            if len(x) != len(y):
                return False
            result = True
            for a, b in zip(x, y):
                result = operator.and_(result, _ShapesStandIn.sym_eq(a, b))
            return result
        if type(x) in (int, bool) and type(y) in (int, bool):
            return x == y
        return _real("sym_eq")(x, y)


def _of_type(*types_):
    return lambda value: type(value) in types_


def _answered(name: str, plain, answer):
    """`name` of the real module for a first argument `plain` accepts, from `answer`; for any
    other, the real function (which also words the error a wrong type gets)."""
    def function(a, *rest, **named):
        return answer(a) if plain(a) else _real(name)(a, *rest, **named)

    function.__name__ = function.__qualname__ = name
    return staticmethod(function)


_BOOL, _INT, _SCALAR = _of_type(bool), _of_type(int, bool), _of_type(*_PLAIN_SCALARS)
_SAME = lambda value: value  # noqa: E731
_ANSWERS = {  # name: (the first arguments answered here, the answer), as the real function gives it
    # guards on a condition: a plain bool is its own answer
    "guard_or_false": (_BOOL, _SAME), "guard_or_true": (_BOOL, _SAME), "guard_bool": (_BOOL, _SAME),
    "statically_known_true": (_BOOL, _SAME), "statically_known_false": (_BOOL, operator.not_),
    # questions about a value: plain numbers are concrete, hinted and not symbolic
    "guard_scalar": (_SCALAR, _SAME), "guarding_hint_or_throw": (_INT, _SAME),
    "optimization_hint": (_of_type(int), _SAME), "is_symbolic": (_SCALAR, lambda value: False),
    "has_guarding_hint": (_SCALAR, lambda value: True), "is_concrete_int": (_INT, lambda value: True),
    "has_static_value": (_SCALAR, lambda value: True), "is_nested_int": (_SCALAR, lambda value: False),
    # free symbols of a structure: none where everything in it is plain
    "has_free_symbols": (lambda value: _all_plain(value), lambda value: False),
    "has_free_unbacked_symbols": (lambda value: _all_plain(value), lambda value: False),
    "free_symbols": (lambda value: _all_plain(value), lambda value: _no_symbols()),
    "free_unbacked_symbols": (lambda value: _all_plain(value), lambda value: _no_symbols()),
}
for _name, (_plain, _answer) in _ANSWERS.items():
    setattr(_ShapesStandIn, _name, _answered(_name, _plain, _answer))


def _no_symbols():
    from torch.utils._ordered_set import OrderedSet  # what the real functions return

    return OrderedSet()


def _all_plain(value, depth: int = 0) -> bool:
    """Nothing symbolic in `value`: plain numbers, strings and None, in tuples, lists and dicts,
    and dense tensors whose sizes, strides and offset are ints."""
    kind = type(value)
    if value is None or kind in _PLAIN_SCALARS or kind is str:
        return True
    if depth > 20:
        return False
    if kind in (tuple, list):
        return all(_all_plain(item, depth + 1) for item in value)
    if kind is dict:
        return all(_all_plain(k, depth + 1) and _all_plain(v, depth + 1) for k, v in value.items())
    import torch

    if kind in (torch.Tensor, torch.nn.Parameter) and value.layout is torch.strided:
        return all(type(n) is int for n in (*value.shape, *value.stride(), value.storage_offset()))
    return False


class _NoSympyObject:
    """`sympy.Basic` before sympy is imported: no object is an instance of it."""


class _SympyStandIn(types.ModuleType):
    """`sympy` until something of it other than an `isinstance` check is needed."""

    def __getattr__(self, name: str):
        if name.startswith("__") and name not in ("__version__", "__all__"):  # `from sympy import *` reads __all__
            raise AttributeError(name)
        if name == "Basic" and not imported() and _read_by_a_function():
            return _NoSympyObject
        return getattr(import_real_sympy(), name)


def _read_by_a_function() -> bool:
    """Is the attribute read inside a function (not at a module's or a class body's top level,
    not by an import statement), so that what it gets is not kept past the call?"""
    code = sys._getframe(2).f_code  # _read_by_a_function <- __getattr__ <- the reader
    return bool(code.co_flags & inspect.CO_OPTIMIZED) and not code.co_filename.startswith("<frozen importlib")


def install() -> bool:
    """Put the stand-ins in place (once, before any job); False when either real module is
    imported already or this torch has no symbolic shapes."""
    if NAME in sys.modules or SYMPY in sys.modules:
        return isinstance(sys.modules.get(NAME), _ShapesStandIn)
    import torch.fx.experimental as package

    shapes_spec, sympy_spec = importlib.util.find_spec(NAME), importlib.util.find_spec(SYMPY)
    if shapes_spec is None or sympy_spec is None:
        return False
    shapes = _ShapesStandIn(NAME, "torch-lsp's stand-in: the real module is imported when a size is symbolic")
    sympy = _SympyStandIn(SYMPY, "torch-lsp's stand-in: the real sympy is imported when it is used")
    describe(shapes, shapes_spec)
    describe(sympy, sympy_spec)
    shapes.__package__, sympy.__package__ = package.__name__, SYMPY
    sympy.__path__ = list(sympy_spec.submodule_search_locations or [])
    sys.modules[SYMPY], sys.modules[NAME] = sympy, shapes
    package.symbolic_shapes = shapes
    sys.meta_path.insert(0, RealForSubmodules(SYMPY, _SympyStandIn, import_real_sympy))  # `import sympy.core`
    return True


def imported() -> bool:
    """Is the real sympy imported (in this process)? Symbolic shapes bring it."""
    return is_real(SYMPY, _SympyStandIn)


def import_real() -> types.ModuleType:
    """The real symbolic shapes module (and sympy), imported now if they are not yet."""
    import_real_sympy()
    return import_in_place_of(NAME, _ShapesStandIn)


def import_real_sympy() -> types.ModuleType:
    return import_in_place_of(SYMPY, _SympyStandIn)
