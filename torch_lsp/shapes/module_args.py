"""Modules to pass to a constructor that asks for one (worker side; torch + stdlib).

`Residual(fn)`, `GaussianDiffusion(model, ...)`, `DETR(backbone, transformer, ...)`,
`TransformerEncoder(encoder_layer, num_layers)`: what to give a parameter that takes a module,
most plausible first, each built only when an attempt uses it (construct.py tries them):

1. the project's classes (defined in the file or imported into it) and builder functions
   (`build_backbone(args)`, `make_model()`) whose names share words with the parameter
   (`encoder_layer` → `TransformerEncoderLayer`, `detr` → `DETR`);
2. for a parameter named like a feature extractor (`backbone`, `encoder`, ...), torchvision's
   `resnet18()` (random weights), the backbone most detection and captioning code expects;
3. `nn.Identity()`, what a wrapper such as `Residual(fn)` shows best;
4. the project's classes that define the attributes the constructor reads from the argument
   (`model.channels`, `model.self_condition`: duck typing), also from the project's other
   modules, then the file's other classes, largest first; a class whose flag sets an attribute
   the constructor reads (`self.random_or_learned_sinusoidal_cond = learned_sinusoidal_cond or
   ...`) is also tried with that flag on (an `assert model.random_or_learned_sinusoidal_cond`).
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import re
import sys
from typing import Any

from torch import nn

MAX_DEPTH = 3  # modules built to be passed to another module's constructor
MAX_CLASSES = 4  # classes tried per parameter in step 4
_FEATURE_EXTRACTORS = re.compile(r"(backbone|encoder|body|cnn|features|feature_extractor|resnet|trunk|image_encoder)")


def words(name: str) -> set[str]:
    """`TransformerEncoderLayer` / `encoder_layer` -> {"transformer", "encoder", "layer"}."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", name))
    return {w.lower() for w in re.split(r"[\s_]+", spaced) if len(w) > 1}


def similar_classes(name: str, namespace: dict, exclude: type | None) -> list[type]:
    """Project module classes whose names share words with `name`, the best matches first."""
    wanted = words(name)
    scored = [(len(wanted & words(c.__name__)), c) for c in project_module_classes(namespace, exclude)]
    scored = [(score + (c.__name__.lower() == name.lower().replace("_", "")), c) for score, c in scored if score]
    return [c for _, c in sorted(scored, key=lambda item: (-item[0], len(item[1].__name__)))]


def builders(name: str, namespace: dict, argparse_defaults: dict) -> list[tuple[Any, str]]:
    """`build_backbone(args)` for `backbone`: builder functions of the namespace whose name (after
    `build_`, `make_`, `create_`, `get_`) shares words with the parameter, called with nothing
    or with the argparse defaults the workspace declares."""
    wanted = words(name)
    out = []
    for key, value in list(namespace.items()):
        match = re.fullmatch(r"(build|make|create|get)_(\w+)", key)
        if not (match and inspect.isfunction(value) and wanted & words(match.group(2)) and _is_project(value)):
            continue
        required = [p for p in inspect.signature(value).parameters.values()
                    if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not required:
            out.append((_Call(value, ()), f"{key}()"))
        elif len(required) == 1 and argparse_defaults:
            out.append((_Call(value, (argparse.Namespace(**argparse_defaults),)), f"{key}(args)"))
    return out


def feature_extractors(name: str) -> list[tuple[Any, str]]:
    """torchvision's resnet18 (random weights) for a `backbone`-like parameter."""
    if not _FEATURE_EXTRACTORS.fullmatch(name.lower()):
        return []
    try:
        from torchvision import models
    except ImportError:
        return []
    return [(_Call(models.resnet18, (), {"weights": None}), "torchvision.models.resnet18()")]


def duck_classes(param: str, init_source: str, namespace: dict, exclude: type | None) -> list[tuple[type, dict]]:
    """(class, flags to turn on) for project classes that define the attributes `__init__` reads
    from `param`; the flags are parameters of theirs whose value sets such an attribute."""
    read = read_attributes(param, init_source)
    if not read:
        return []
    found = []
    for cls in project_module_classes(namespace, exclude, everywhere=True):
        assigned = _assigned_attributes(cls)
        if read & set(assigned):
            flags = {p for attr in read for p in assigned.get(attr, ())}
            found.append((len(read & set(assigned)), cls, flags))
    found.sort(key=lambda item: -item[0])
    out = []
    for _, cls, flags in found[:MAX_CLASSES]:
        out.append((cls, {}))
        out += [(cls, {flag: True}) for flag in sorted(flags)[:2]]
    return out


def read_attributes(param: str, source: str) -> set[str]:
    """Attributes `__init__` reads from the parameter: `model.channels` -> {"channels"}."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == param and not n.attr.startswith("__") and isinstance(n.ctx, ast.Load)
            and n.attr not in ("forward", "parameters", "named_parameters", "modules", "children", "to", "eval")}


@functools.lru_cache(maxsize=512)
def _assigned_attributes(cls: type) -> dict[str, set[str]]:
    """`self.X = <expr>` in the class's `__init__`s: X -> the bool-default parameters in <expr>."""
    out: dict[str, set[str]] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass.__module__.startswith("torch"):
            continue
        try:
            import textwrap

            tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
            flags = {n for n, p in inspect.signature(init).parameters.items() if isinstance(p.default, bool)}
        except (OSError, TypeError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                names = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)} & flags
                for target in node.targets:
                    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                        out.setdefault(target.attr, set()).update(names)
    return out


# -- which classes are the project's --------------------------------------------------------------


def project_module_classes(namespace: dict, exclude: type | None = None, everywhere: bool = False) -> list[type]:
    """nn.Module classes of the project in the namespace (defined there or imported into it);
    `everywhere`: also those of the project's other modules loaded in this job."""
    values = list(namespace.values())
    if everywhere:
        for module in list(sys.modules.values()):
            if _is_project(module):
                values += list(vars(module).values())
    seen: dict[type, None] = {}
    for value in values:
        if isinstance(value, type) and issubclass(value, nn.Module) and value is not exclude and _is_project(value):
            seen.setdefault(value)
    return list(seen)


def _is_project(value: Any) -> bool:
    """Defined in a module of the workspace (not an installed library, not torch-lsp)."""
    from torch_lsp.shapes import context

    module = value if inspect.ismodule(value) else sys.modules.get(getattr(value, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    job = context.current()
    if not path or job is None or job.sources is None:
        return bool(path) and "site-packages" not in path and "dist-packages" not in path
    return job.sources.owns(path)


class _Call:
    """A module made by calling something (a builder, a torchvision model) when first used."""

    def __init__(self, function, args: tuple = (), kwargs: dict | None = None) -> None:
        self.function, self.args, self.kwargs = function, args, kwargs or {}
        self.value: nn.Module | None = None

    def made(self) -> nn.Module:
        """The module (made once: every attempt that uses it gets the same one)."""
        if self.value is None:
            value = self.function(*self.args, **self.kwargs)
            if not isinstance(value, nn.Module):
                raise TypeError(f"{getattr(self.function, '__name__', 'the builder')} did not return a module")
            self.value = value
        return self.value
