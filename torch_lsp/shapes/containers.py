"""Inputs that are objects of the project's own classes (worker side; torch + stdlib).

Some `forward`s take an object, not a tensor: DETR's `samples: NestedTensor` holds the images and
their padding mask (`NestedTensor(tensors, mask)`). When a parameter is annotated with such a
class — a plain class of the project, not a tensor, a module or a standard type — the example
input is an instance built from tensors: one input per field of its `__init__`, each found like
a parameter of its own (the first layer `tensor_list.tensors` reaches, the name `mask`, ...).

A parameter that `forward` only reads entries of (`batch["image"]`, `batch.get("label")`) is a
dict of tensors, one per key, each found the same way (Lightning-style and Hugging Face-style
batches).
"""

from __future__ import annotations

import ast
import inspect
import typing
from typing import Any

import torch
from torch import nn

from torch_lsp.shapes.first_use import Use, first_use_of, function_node, key_path

_STANDARD_MODULES = ("builtins", "typing", "collections", "numpy", "torch", "torchvision", "enum", "dataclasses",
                     "pathlib", "argparse")


def annotations(function) -> dict[str, Any]:
    """The function's parameter annotations, resolved where they can be."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - annotations naming what does not exist here
        return {k: v for k, v in getattr(function, "__annotations__", {}).items() if not isinstance(v, str)}


def is_tensor_list(annotation: Any) -> bool:
    """`List[Tensor]`, `list[torch.Tensor]`, `Sequence[Tensor]`, `Tuple[Tensor, ...]`."""
    import collections.abc

    origin = typing.get_origin(annotation)
    if origin not in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        return False
    args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
    return len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], torch.Tensor)


def container_class(annotation: Any) -> type | None:
    """The project class an annotation names (`Optional[...]` unwrapped), if it is one."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "types.UnionType":
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = options[0] if len(options) == 1 else None
    if not isinstance(annotation, type) or issubclass(annotation, (torch.Tensor, nn.Module, BaseException)):
        return None
    module = getattr(annotation, "__module__", "") or ""
    if module.split(".")[0] in _STANDARD_MODULES:
        return None
    return annotation


def fields(cls: type, instance: nn.Module, param: str) -> list[tuple[str, Use | None]] | None:
    """(field, first use of `param.field` in forward) for each required `__init__` parameter of
    `cls`; None when it takes none, or only what cannot be a tensor (`*args`)."""
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return None
    names = [n for n, p in signature.parameters.items() if n != "self" and p.default is inspect.Parameter.empty
             and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not names:
        return None
    return [(name, first_use_of(instance, f"{param}.{name}")) for name in names]


def dict_keys(instance: nn.Module, param: str) -> list[str] | None:
    """The keys `forward` reads from `param`, in source order, when it reads nothing else of it
    (`batch["image"]`, `batch.get("label")`, `"label" in batch`); else None."""
    function = function_node(type(instance))
    if function is None:
        return None
    parents = {child: node for node in ast.walk(function) for child in ast.iter_child_nodes(node)}
    keys: dict[str, tuple[int, int]] = {}
    for node in ast.walk(function):
        if not (isinstance(node, ast.Name) and node.id == param and isinstance(node.ctx, ast.Load)):
            continue
        parent = parents.get(node)
        key = _key_read(node, parent, parents.get(parent))
        if key is None:
            if isinstance(parent, ast.Compare) and isinstance(parent.left, ast.Constant) and parent.ops \
                    and isinstance(parent.ops[0], (ast.In, ast.NotIn)):
                continue  # `"label" in batch`
            return None
        keys.setdefault(key, (node.lineno, node.col_offset))
    return sorted(keys, key=keys.get) or None


def _key_read(node: ast.Name, parent: ast.AST | None, grandparent: ast.AST | None) -> str | None:
    """The key when `node` is read as `node["key"]` or `node.get("key", ...)`."""
    if isinstance(parent, ast.Subscript) and parent.value is node:
        path = key_path(parent)
    elif isinstance(parent, ast.Attribute) and isinstance(grandparent, ast.Call) and grandparent.func is parent:
        path = key_path(grandparent)
    else:
        path = None
    return path.rpartition(".")[2] if path else None
