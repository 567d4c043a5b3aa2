"""Typed settings sections: dataclasses whose fields carry a description and bounds, built from
JSON-like dicts (camelCase keys) with a precise error for the first bad value.

config.py declares the sections; this is the machinery. It replaces pydantic there: six small
models cost the language server ~19 MB of resident memory in pydantic's schema machinery (a
fifth of it), for what fits in this page. Messages follow pydantic's wording, which users and
docs/configuration.md already know ("Input should be greater than 0").
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

_TRUE = {"true", "t", "yes", "y", "on", "1"}
_FALSE = {"false", "f", "no", "n", "off", "0"}


def setting(default: Any = dataclasses.MISSING, *, factory: Any = None, description: str = "",
            gt: float | None = None, ge: float | None = None, le: float | None = None) -> Any:
    """A field of a Section: its default (or `factory` for mutable ones), its description for the
    settings reference, and numeric bounds."""
    metadata = {"description": description, "gt": gt, "ge": ge, "le": le}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class SettingError(ValueError):
    """The first bad value: where (`loc`, keys and list positions), what kind, and why."""

    def __init__(self, loc: tuple[str | int, ...], kind: str, message: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {message}")
        self.loc, self.kind, self.message = loc, kind, message


def camel(name: str) -> str:
    """`debounce_ms` -> `debounceMs`; camelCase stays as it is; `DEBOUNCE_MS` -> `debounceMs`."""
    if re.match(r"^[a-z]+[A-Za-z0-9]*$", name) and not re.search(r"\d[a-z]", name):
        return name
    pascal = re.sub(r"([0-9A-Za-z])_(?=[0-9A-Z])", lambda m: m.group(1), name.title())
    return re.sub(r"(^_*[A-Z])", lambda m: m.group(1).lower(), pascal)


class Section:
    """Base of the settings dataclasses."""

    @classmethod
    def validate(cls, data: dict[str, Any], loc: tuple[str | int, ...] = ()) -> Any:
        """An instance from camelCase keys; unknown keys and bad values raise SettingError."""
        hints, values = _hints(cls), {}
        for spec in dataclasses.fields(cls):  # in declaration order, then unknown keys: as pydantic
            key = camel(spec.name)
            if key in data:
                values[spec.name] = _check(hints[spec.name], data[key], (*loc, key), spec.metadata)
        known = {camel(spec.name) for spec in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise SettingError((*loc, key), "extra_forbidden", "Extra inputs are not permitted")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain data with camelCase keys (what a client sends)."""
        return {camel(f.name): _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def reference(cls, prefix: str = "") -> list[dict[str, Any]]:
        """Every leaf setting: dotted camelCase key, JSON type, default, description, choices."""
        rows: list[dict[str, Any]] = []
        hints = _hints(cls)
        for spec in dataclasses.fields(cls):
            key, annotation = prefix + camel(spec.name), hints[spec.name]
            if isinstance(annotation, type) and issubclass(annotation, Section):
                rows.extend(annotation.reference(key + "."))
                continue
            default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
            choices = [str(v) for v in get_args(annotation)] if get_origin(annotation) is Literal else None
            rows.append({"key": key, "type": _json_type(annotation), "default": _plain(default),
                         "description": spec.metadata.get("description", ""), "enum": choices})
        return rows


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _json_type(annotation: Any) -> str:
    optional = [a for a in get_args(annotation) if a is not type(None)] if _is_union(annotation) else [annotation]
    kind = optional[0] if len(optional) == 1 else annotation
    origin = get_origin(kind)
    if kind is bool:
        return "boolean"
    if kind is int:
        return "integer"
    if kind is float:
        return "number"
    if origin is list:
        return "array"
    if origin is dict:
        return "object"
    return "string"


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _check(annotation: Any, value: Any, loc: tuple, bounds: Any = None) -> Any:
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Section):
        if not isinstance(value, dict):
            raise SettingError(loc, "model_type", f"Input should be a valid dictionary or instance of {annotation.__name__}")
        return annotation.validate(value, loc)
    if _is_union(annotation):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(inner, value, loc, bounds)
    if origin is Literal:
        if any(value == choice and type(value) is type(choice) for choice in args):
            return value
        names = [repr(choice) for choice in args]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        raise SettingError(loc, "literal_error", f"Input should be {listed}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise SettingError(loc, "list_type", "Input should be a valid list")
        return [_check(args[0], item, (*loc, index)) for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingError(loc, "dict_type", "Input should be a valid dictionary")
        return {_check(args[0], key, (*loc, key)): _check(args[1], item, (*loc, key)) for key, item in value.items()}
    if annotation is bool:
        return _boolean(value, loc)
    if annotation in (int, float):
        return _within(_number(annotation, value, loc), loc, bounds or {})
    if annotation is str:
        if not isinstance(value, str):
            raise SettingError(loc, "string_type", "Input should be a valid string")
        return value
    raise TypeError(f"settings field of unsupported type {annotation!r}")  # a programming error


def _boolean(value: Any, loc: tuple) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise SettingError(loc, "bool_parsing", "Input should be a valid boolean, unable to interpret input")


def _number(kind: type, value: Any, loc: tuple) -> int | float:
    name, parsing = ("integer", "an integer") if kind is int else ("number", "a number")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if kind is float else int(value.strip())
        except ValueError:
            raise SettingError(loc, f"{kind.__name__}_parsing",
                               f"Input should be a valid {name}, unable to parse string as {parsing}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingError(loc, f"{kind.__name__}_type", f"Input should be a valid {name}")
    if kind is int and not (math.isfinite(value) and value == int(value)):
        raise SettingError(loc, "int_from_float", "Input should be a valid integer, got a number with a fractional part")
    return int(value) if kind is int else float(value)


def _within(value: int | float, loc: tuple, bounds: Any) -> int | float:
    if bounds.get("gt") is not None and not value > bounds["gt"]:
        raise SettingError(loc, "greater_than", f"Input should be greater than {bounds['gt']}")
    if bounds.get("ge") is not None and not value >= bounds["ge"]:
        raise SettingError(loc, "greater_than_equal", f"Input should be greater than or equal to {bounds['ge']}")
    if bounds.get("le") is not None and not value <= bounds["le"]:
        raise SettingError(loc, "less_than_equal", f"Input should be less than or equal to {bounds['le']}")
    return value
