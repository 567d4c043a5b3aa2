"""Build an instance of a module class that nobody constructs (worker side; torch + stdlib).

What the code gives, in this order, for each `__init__` parameter:

1. the value written at one of the workspace's construction sites (`Net(num_classes=10)` in
   train.py), when that argument's source text evaluates in the class's module;
2. the parameter's own default (left out of the call);
3. a config object the annotation or the name asks for: a dataclass, NamedTuple or plain class
   whose fields all have defaults (`GPT(GPTConfig())`; `None` int fields get a value by name),
   or an `argparse.Namespace` of the defaults the workspace's parsers declare (`args`, `opt`);
4. a module, for parameters typed or named as one (`backbone: nn.Module`, `fn`, `model`): an
   instance of another class of the same module that can itself be built, else `nn.Identity()`;
   a class for parameters the constructor calls (`block(in_ch, out_ch)`);
5. a value chosen by name and annotation: `heads` 4, `depth` 2, `dim` 64, `vocab_size` 100,
   `image_size` 32, strings from the literals `__init__` compares the parameter with, ...

A failed construction is retried with the next candidate of one parameter at a time (bounded),
so that `layers: int` becomes `[2, 2]` when the constructor indexes it. Everything runs under the
job's device context (meta), so no weights are allocated.
"""

from __future__ import annotations

import argparse
import functools
import ast
import dataclasses
import inspect
import re
import sys
import textwrap
import typing
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torch_lsp.shapes import module_args
from torch_lsp.shapes.context import now

MAX_ATTEMPTS = 24  # constructions tried per class (each costs microseconds to milliseconds on meta)
MAX_DEPTH = module_args.MAX_DEPTH


class CannotConstruct(Exception):
    pass


@dataclass
class Hints:
    """What the workspace says about constructing classes (sent with the probes)."""

    # class name -> construction sites: [{"args": [source, ...], "kwargs": {name: source}}]
    sites: dict[str, list[dict]] = field(default_factory=dict)
    # argparse option dest -> default value, from every parser the workspace defines
    argparse_defaults: dict[str, Any] = field(default_factory=dict)
    deadline: float = float("inf")  # now() after which no new attempt starts


@dataclass
class Built:
    instance: nn.Module
    call_text: str  # how it was built, as code: "GPT(GPTConfig())"


# -- choosing values by name -------------------------------------------------------------------

# (pattern on the parameter name, value). First match wins; patterns are full matches.
_INT_BY_NAME: list[tuple[str, int]] = [
    (r".*(heads|head|nhead|n_head|num_heads)", 4),
    (r"(num_|n_)?(layers?|blocks?|depth|n_layer|num_hidden_layers)|.*_(layers|depth|blocks)", 2),
    (r"(num_|n_)?(classes|labels|class|categories)|.*_classes", 10),
    (r".*(vocab|vocab_size|num_embeddings|n_tokens|num_tokens|n_vocab|ntoken|ntokens)", 100),
    (r".*(image_size|img_size|resolution|input_resolution|image_resolution|img_res)", 32),
    (r".*(patch_size|patch)", 4),
    (r".*(block_size|seq_len|seq_length|max_len|max_length|context_length|n_ctx|max_seq_len|frames|num_frames)", 16),
    (r"(in_channels|in_chans|in_ch|input_channels|channels|in_planes|inplanes|n_channels|num_channels|c_in|image_channels)", 3),
    (r".*(kernel_size|kernel|ksize)", 3),
    (r".*(stride)", 1),
    (r".*(padding|pad)", 1),
    (r".*(dilation|groups)", 1),
    (r".*(queries|num_queries)", 10),
    (r".*(mult|multiplier|factor|ratio|scale)", 2),
    (r".*(batch_size|batch)", 2),
]
_DEFAULT_INT = 64  # dims, widths, features, hidden sizes: divisible by every head count above
_FLOAT_BY_NAME = [(r".*(dropout|drop|p|rate|prob|eps|epsilon|momentum|alpha|beta|gamma|lr|t|temperature|tau)", 0.1)]
_MODULE_NAMES = re.compile(r"(fn|func|module|mod|net|network|model|backbone|body|encoder|decoder|layer|block|"
                           r"transformer|head|submodule|inner|wrapped|base|base_model|denoiser|unet|.*_(model|net|fn|module))")
_CONFIG_NAMES = re.compile(r"(config|cfg|conf|configs|opt|opts|args|hparams|hp|params|options|settings|.*_(config|cfg))")
_ARGS_NAMES = re.compile(r"(args|opt|opts|hparams|options|flags)")


def int_for(name: str) -> int:
    for pattern, value in _INT_BY_NAME:
        if re.fullmatch(pattern, name):
            return value
    return _DEFAULT_INT


def float_for(name: str) -> float:
    for pattern, value in _FLOAT_BY_NAME:
        if re.fullmatch(pattern, name):
            return value
    return 0.5


# -- the search ----------------------------------------------------------------------------------


def construct(cls: type, namespace: dict, hints: Hints, depth: int = 0, fixed: dict | None = None) -> Built:
    """An instance of `cls` (an nn.Module subclass), or CannotConstruct saying why not."""
    built = next(constructions(cls, namespace, hints, depth, fixed), None)
    if built is None:
        raise CannotConstruct(f"{cls.__name__} could not be built in time")
    return built


def constructions(cls: type, namespace: dict, hints: Hints, depth: int = 0, fixed: dict | None = None):
    """Successive different instances of `cls`, most plausible first: when the first cannot be
    called (an `nn.Identity()` where a wrapper needs a real model), the next may. Raises
    CannotConstruct (from the first `next`) when no attempt succeeds."""
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError) as error:
        raise CannotConstruct(f"cannot read {cls.__name__}.__init__'s signature: {error}")
    parameters = [p for name, p in signature.parameters.items() if name != "self"
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    init_source = _init_source(cls)
    annotations = _resolved_annotations(cls.__init__)
    from_site = _site_values(cls, namespace, hints)
    choices: list[tuple[inspect.Parameter, list[tuple[Any, str]]]] = []
    for parameter in parameters:
        if fixed and parameter.name in fixed:
            choices.append((parameter, [(fixed[parameter.name], repr(fixed[parameter.name]))]))
            continue
        options = [from_site[parameter.name]] if parameter.name in from_site else []
        if parameter.default is not inspect.Parameter.empty:
            options.append((_KEEP, ""))
        else:
            options += _candidates(parameter, annotations.get(parameter.name), cls, namespace, hints, init_source, depth)
        if not options:
            raise CannotConstruct(f"no value for {cls.__name__}'s parameter `{parameter.name}`")
        choices.append((parameter, options))
    yield from _attempts(cls, choices, hints)


_KEEP = object()  # leave the parameter out: its default applies


def _attempts(cls: type, choices, hints: Hints):
    tried: set[tuple[int, ...]] = set()
    last_error: BaseException | None = None
    successes = 0
    # Breadth first over "change one more parameter to its next candidate".
    queue = [tuple([0] * len(choices))]
    while queue and len(tried) < MAX_ATTEMPTS and now() < hints.deadline:
        current = queue.pop(0)
        if current in tried:
            continue
        tried.add(current)
        for index, (_, options) in enumerate(choices):
            if current[index] + 1 < len(options):
                queue.append(current[:index] + (current[index] + 1,) + current[index + 1:])
        try:
            args, kwargs, texts = _call_arguments(choices, current)
            instance = cls(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any failure means: try other values
            # The first attempt's error says most: it used the most plausible values.
            last_error = last_error or error
            continue
        if not isinstance(instance, nn.Module):
            raise CannotConstruct(f"{cls.__name__}(...) did not return a module")
        successes += 1
        yield Built(instance, f"{cls.__name__}({', '.join(texts)})")
    if successes == 0:
        reason = f"{type(last_error).__name__}: {_first_line(last_error)}" if last_error else "out of time"
        raise CannotConstruct(f"{cls.__name__} could not be built ({reason})")


def _call_arguments(choices, picks):
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    texts: list[str] = []
    positional_ok = True
    for (parameter, options), pick in zip(choices, picks):
        value, text = options[pick]
        if isinstance(value, _Lazy):
            built = value.get()
            value, text = built.instance, built.call_text
        elif isinstance(value, module_args._Call):
            value = value.made()
        if value is _KEEP:
            positional_ok = False
            continue
        if parameter.kind == parameter.POSITIONAL_ONLY or (positional_ok and parameter.kind == parameter.POSITIONAL_OR_KEYWORD):
            args.append(value)
            texts.append(text)
        else:
            kwargs[parameter.name] = value
            texts.append(f"{parameter.name}={text}")
    return args, kwargs, texts


def _candidates(parameter: inspect.Parameter, annotation: Any, cls: type, namespace: dict, hints: Hints,
                init_source: str, depth: int) -> list[tuple[Any, str]]:
    """Values to try for one required parameter, most plausible first; for a union
    (`Union[Tuple[int, int, int, int], int]`), those of each of its types in turn."""
    out: list[tuple[Any, str]] = []
    for option in _union_options(annotation):
        for value, text in _candidates_of(parameter, option, cls, namespace, hints, init_source, depth):
            if not any(text == seen for _, seen in out):
                out.append((value, text))
    return out


def _union_options(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "types.UnionType":
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return options or [None]
    return [annotation]


def _sequence_length(annotation: Any, name: str, init_source: str) -> int:
    """How many items a tuple / list parameter needs: `Tuple[int, int, int, int]` says 4; else
    the largest index `__init__` reads (`layers[3]`) + 1; else 2."""
    args = typing.get_args(annotation)
    if args and Ellipsis not in args:
        return len(args)
    return max(2, _largest_index(name, init_source) + 1)


def _candidates_of(parameter: inspect.Parameter, annotation: Any, cls: type, namespace: dict, hints: Hints,
                   init_source: str, depth: int) -> list[tuple[Any, str]]:
    name = parameter.name.lower()
    out: list[tuple[Any, str]] = []
    kind = _annotation_kind(annotation)
    config_class = _config_class(annotation) if kind == "other" else None
    if config_class is not None:
        built = build_config(config_class, namespace)
        if built is not None:
            out.append(built)
    # A parameter named like a config (`config`, `args`) takes a config object before a module
    # that happens to define the attributes it reads (a `Transformer` with `.block_size`).
    configs = kind in ("none", "other") and _CONFIG_NAMES.fullmatch(name)
    modules = _module_candidates(parameter.name, kind, cls, namespace, hints, init_source, depth) \
        if kind in ("module", "other", "none") else []
    if not configs:
        out += modules
    else:
        if _ARGS_NAMES.fullmatch(name) and hints.argparse_defaults:
            out.append((argparse.Namespace(**hints.argparse_defaults), "argparse defaults"))
        for config in _config_classes(namespace):
            built = build_config(config, namespace)
            if built is not None:
                out.append(built)
        if hints.argparse_defaults and not _ARGS_NAMES.fullmatch(name):
            out.append((argparse.Namespace(**hints.argparse_defaults), "argparse defaults"))
        out += modules
    literals = _compared_literals(parameter.name, init_source)
    if kind == "str" or literals:
        out += [(value, repr(value)) for value in literals]
    if kind in ("int", "none", "tuple", "list"):
        value = int_for(name)
        if kind in ("int", "none"):
            out.append((value, str(value)))
            if name in ("dim", "axis"):  # a width in most code, an axis in some (PixelNorm(dim))
                out.append((1, "1"))
        length = _sequence_length(annotation, parameter.name, init_source)
        sequence = (value,) * length if kind == "tuple" else [value] * length
        out.append((sequence, repr(sequence)))
    if kind == "float" or (kind == "none" and re.fullmatch(_FLOAT_BY_NAME[0][0], name)):
        value = float_for(name)
        out.insert(0 if kind == "float" else len(out), (value, repr(value)))
    if kind == "bool":
        out += [(False, "False"), (True, "True")]
    if kind == "none":
        out += [(True, "True"), (None, "None")]
    return out


def _annotation_kind(annotation: Any) -> str:
    if annotation is None or annotation is inspect.Parameter.empty:
        return "none"
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "types.UnionType":
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _annotation_kind(options[0]) if options else "none"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if annotation is str:
        return "str"
    if origin in (tuple, typing.Tuple) or annotation is tuple:
        return "tuple"
    if origin in (list, typing.List) or annotation is list:
        return "list"
    if isinstance(annotation, type) and issubclass(annotation, nn.Module):
        return "module"
    return "other"


def _resolved_annotations(function) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - string annotations naming things that do not exist
        return {k: v for k, v in getattr(function, "__annotations__", {}).items() if not isinstance(v, str)}


# -- config objects ------------------------------------------------------------------------------


def _config_class(annotation: Any) -> type | None:
    if isinstance(annotation, type) and not issubclass(annotation, nn.Module) and _is_config_class(annotation):
        return annotation
    return None


def _is_config_class(cls: type) -> bool:
    if cls.__module__ in ("builtins", "typing") or cls.__module__.startswith(("torch", "argparse")):
        return False
    if dataclasses.is_dataclass(cls) or (issubclass(cls, tuple) and hasattr(cls, "_fields")):
        return True
    return "config" in cls.__name__.lower() or "args" in cls.__name__.lower()


def _config_classes(namespace: dict) -> list[type]:
    """Config-like classes of the module, those named *Config first."""
    found = [v for v in namespace.values() if isinstance(v, type) and not issubclass(v, nn.Module)
             and not issubclass(v, BaseException) and _is_config_class(v) and _defined_in(v, namespace)]
    return sorted(found, key=lambda c: "config" not in c.__name__.lower())


def build_config(cls: type, namespace: dict) -> tuple[Any, str] | None:
    """`GPTConfig()`, with `None` defaults of int-typed fields filled by name."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001
        hints = getattr(cls, "__annotations__", {})
    values: dict[str, Any] = {}
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            default = f.default if f.default is not dataclasses.MISSING else None
            if not has_default or default is None:
                values[f.name] = _config_field_value(f.name, hints.get(f.name))
    elif issubclass(cls, tuple) and hasattr(cls, "_fields"):
        defaults = getattr(cls, "_field_defaults", {})
        for name in cls._fields:
            if defaults.get(name) is None:
                values[name] = _config_field_value(name, hints.get(name))
    else:
        try:
            signature = inspect.signature(cls)
        except (TypeError, ValueError):
            return None
        for name, p in signature.parameters.items():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.default is inspect.Parameter.empty or p.default is None:
                values[name] = _config_field_value(name, hints.get(name))
    try:
        instance = cls(**values)
    except Exception:  # noqa: BLE001
        return None
    if not dataclasses.is_dataclass(cls) and not hasattr(cls, "_fields"):
        # A plain class that stores settings as class attributes: fill None ones too.
        for name in dir(cls):
            if not name.startswith("_") and getattr(instance, name, 0) is None and not callable(getattr(cls, name, None)):
                try:
                    setattr(instance, name, _config_field_value(name, hints.get(name)))
                except Exception:  # noqa: BLE001
                    pass
    text = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return instance, f"{cls.__name__}({text})"


def _config_field_value(name: str, annotation: Any) -> Any:
    kind = _annotation_kind(annotation)
    if kind == "float":
        return float_for(name.lower())
    if kind == "bool":
        return False
    if kind == "str":
        return ""
    return int_for(name.lower())


# -- modules for module parameters -------------------------------------------------------------


def _module_classes(namespace: dict, exclude: type | None = None) -> list[type]:
    return [v for v in namespace.values() if isinstance(v, type) and issubclass(v, nn.Module)
            and v is not exclude and _defined_in(v, namespace)]


def _module_candidates(name: str, kind: str, cls: type, namespace: dict, hints: Hints, init_source: str,
                       depth: int) -> list[tuple[Any, str]]:
    """Modules for a parameter that takes one, in module_args.py's order, built only when
    tried; nothing for a parameter that neither is typed nor named like a module nor shares
    words with a class or builder of the project."""
    similar = module_args.similar_classes(name, namespace, exclude=cls)
    made = module_args.builders(name, namespace, hints.argparse_defaults)
    duck = module_args.duck_classes(name, init_source, namespace, exclude=cls)
    if not (kind == "module" or _MODULE_NAMES.fullmatch(name.lower()) or similar or made or duck):
        return []
    out: list[tuple[Any, str]] = []
    if _called_with_arguments(name, init_source):  # block(in_ch, out_ch): a class
        out += [(c, c.__name__) for c in _module_classes(namespace, exclude=cls)]
    if depth >= MAX_DEPTH:
        return out + [(nn.Identity(), "nn.Identity()")]
    out += [(_Lazy(c, _home(c, namespace), hints, depth + 1), c.__name__) for c in similar[:2]] + made
    out += module_args.feature_extractors(name) + [(nn.Identity(), "nn.Identity()")]
    out += [(_Lazy(c, _home(c, namespace), hints, depth + 1, flags), c.__name__ + "".join(f", {k}=True" for k in flags))
            for c, flags in duck]
    largest = sorted(_module_classes(namespace, exclude=cls), key=lambda c: -_source_size(c))
    out += [(_Lazy(c, namespace, hints, depth + 1), c.__name__) for c in largest[:module_args.MAX_CLASSES]]
    unique: dict[str, tuple[Any, str]] = {}
    for value, text in out:
        unique.setdefault(text, (value, text))
    return list(unique.values())


def _home(cls: type, namespace: dict) -> dict:
    """The namespace a class is built in: its own module's (its builders, its constants)."""
    module = sys.modules.get(cls.__module__)
    return vars(module) if module is not None and cls.__module__ != namespace.get("__name__") else namespace


class _Lazy:
    """A module argument built when an attempt first uses it (`fixed`: parameters given)."""

    def __init__(self, cls: type, namespace: dict, hints: Hints, depth: int, fixed: dict | None = None) -> None:
        self.args = (cls, namespace, hints, depth, fixed)
        self.built: Built | None = None

    def get(self) -> Built:
        if self.built is None:
            self.built = construct(*self.args)  # CannotConstruct fails the attempt
        return self.built


@functools.lru_cache(maxsize=1024)
def _source_size(cls: type) -> int:
    """Lines of the class's source (inspect finds a class by parsing its whole file: cached)."""
    try:
        lines, _ = inspect.getsourcelines(cls)
        return len(lines)
    except (OSError, TypeError):
        return 0


def _defined_in(value: type, namespace: dict) -> bool:
    return value.__module__ == namespace.get("__name__")


# -- what the constructor's source says --------------------------------------------------------


def _init_source(cls: type) -> str:
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            try:
                return textwrap.dedent(inspect.getsource(init))
            except (OSError, TypeError):
                return ""
    return ""


def _compared_literals(name: str, source: str) -> list[str]:
    """String literals `__init__` compares the parameter with: `cell_type == 'rnn'`, `in (...)`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == name:
            for comparator in node.comparators:
                elements = comparator.elts if isinstance(comparator, (ast.Tuple, ast.List, ast.Set)) else [comparator]
                found += [e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return list(dict.fromkeys(found))


def _largest_index(name: str, source: str) -> int:
    """The largest constant index `__init__` reads from the parameter (`layers[3]` -> 3), -1."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return -1
    return max((n.slice.value for n in ast.walk(tree) if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
                and n.value.id == name and isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, int)),
               default=-1)


def _called_with_arguments(name: str, source: str) -> bool:
    """Does `__init__` call the parameter (`block(64, 128)`)? Then it wants a class."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name and (n.args or n.keywords)
               for n in ast.walk(tree))


# -- construction sites --------------------------------------------------------------------------


def _site_values(cls: type, namespace: dict, hints: Hints) -> dict[str, tuple[Any, str]]:
    """Values of the first construction site whose arguments evaluate here (module constants,
    literals, config calls; a site's local variables do not, and those arguments are skipped)."""
    sites = hints.sites.get(cls.__name__) or []
    try:
        names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    except (TypeError, ValueError):
        return {}
    for site in sites:
        values: dict[str, tuple[Any, str]] = {}
        for index, text in enumerate(site.get("args", [])):
            if index < len(names):
                evaluated = _evaluate(text, namespace)
                if evaluated is not _FAILED:
                    values[names[index]] = (evaluated, text)
        for key, text in site.get("kwargs", {}).items():
            evaluated = _evaluate(text, namespace)
            if evaluated is not _FAILED and key in names:
                values[key] = (evaluated, text)
        if values:
            return values
    return {}


_FAILED = object()


def _evaluate(text: str, namespace: dict) -> Any:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return _FAILED
    try:
        return ast.literal_eval(tree)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    # Names and calls of the module itself (constants, config classes): evaluated in a copy.
    if any(isinstance(n, (ast.Lambda, ast.NamedExpr, ast.Await, ast.Yield)) for n in ast.walk(tree)):
        return _FAILED
    try:
        return eval(compile(tree, "<construction site>", "eval"), dict(namespace))  # noqa: S307 - user code runs anyway
    except Exception:  # noqa: BLE001
        return _FAILED


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
