"""Deprecated and removed APIs (TL302). The table lives in deprecations.toml, next to this file."""

from __future__ import annotations

import ast
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

from torch_lsp.analysis.facts import Fix, Position, Severity, Span, TextEdit
from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.rules import REGISTRY, RuleContext, rule
from torch_lsp.analysis.syntax import ParsedModule, _import_table

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the same fallback as config.py (Python 3.10 needs tomli)
    import tomli as tomllib

TABLE = Path(__file__).with_suffix(".toml")


@dataclass(frozen=True)
class DeprecatedCall:
    name: str
    since: str
    replacement: str | None = None
    prepend: tuple[str, ...] = ()
    positional: tuple[str, ...] = ()
    list_args: bool = False
    removed: bool = False
    hint: str | None = None


@dataclass(frozen=True)
class DeprecatedKeyword:
    callees: tuple[str, ...]
    keyword: str
    since: str
    replacement: str | None = None
    when_true: str | None = None
    when_false: str | None = None
    otherwise: str | None = None
    hint: str | None = None


@dataclass(frozen=True)
class DeprecationTable:
    calls: dict[str, DeprecatedCall]
    keywords: tuple[DeprecatedKeyword, ...]


@functools.cache
def deprecation_table(path: Path = TABLE) -> DeprecationTable:
    """The table, loaded once. A broken table is a bug in torch-lsp: let it raise in tests."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    calls = {}
    for entry in data.get("call", []):
        entry = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
        calls[entry["name"]] = DeprecatedCall(**entry)
    keywords = tuple(DeprecatedKeyword(**{k: tuple(v) if isinstance(v, list) else v for k, v in e.items()})
                     for e in data.get("keyword", []))
    return DeprecationTable(calls, keywords)


@rule("TL302", "deprecated-api", Severity.WARNING,
      "A deprecated or removed PyTorch/torchvision API is used.", fixable=True, scope="statement")
def deprecated_api(ctx: RuleContext):
    """
    ## What it does
    Finds calls of PyTorch and torchvision APIs that are deprecated or already removed, matched
    by qualified name through the file's imports (`from torch.cuda.amp import autocast` then
    `autocast()` is found too), and deprecated keyword arguments such as torchvision's
    `pretrained=`. The table is `torch_lsp/analysis/rules/deprecations.toml`: among others
    `torch.cuda.amp.autocast` / `GradScaler` -> `torch.amp.autocast("cuda")` /
    `torch.amp.GradScaler("cuda")`, `pretrained=True` -> `weights="DEFAULT"`,
    `torch.nn.utils.weight_norm` -> `torch.nn.utils.parametrizations.weight_norm`,
    `torch.chain_matmul` -> `torch.linalg.multi_dot`, and the removed `torch.solve`,
    `torch.symeig`, `torch.eig`, `torch.lstsq`, `torch.qr`, `torch.cholesky`,
    `torch.matrix_rank`.

    ## Why is this bad?
    Deprecated APIs print warnings on every run and disappear in a later release; the removed
    ones already raise `RuntimeError` in current torch. Several replacements differ in more
    than their name (argument order, return types), which is easy to get wrong in a hurry.

    ## Example
    ```python
    scaler = torch.cuda.amp.GradScaler()
    with torch.cuda.amp.autocast():
        loss = criterion(model(x), y)
    backbone = torchvision.models.resnet50(pretrained=True)
    ```

    ## Use instead
    ```python
    scaler = torch.amp.GradScaler("cuda")
    with torch.amp.autocast("cuda"):
        loss = criterion(model(x), y)
    backbone = torchvision.models.resnet50(weights="DEFAULT")
    ```

    ## Fix
    Rewrites the call when the replacement is a drop-in (positional arguments become keywords
    where the new signature orders them differently; `import torch` is added if the file has
    none). Entries whose replacement behaves differently (e.g. `torch.solve`, `torch.range`)
    are reported with a hint and no automatic fix. Suppress with `# torch-lsp: ignore[TL302]`.
    To add an API, add an entry to deprecations.toml.
    """
    this = REGISTRY["TL302"]
    table = deprecation_table()
    parsed = ctx.parsed
    for call in nodes(parsed, ast.Call):
        qualified = parsed.qualified_name(call.func)
        if qualified is None:
            continue
        entry = table.calls.get(qualified)
        if entry is not None:
            yield this.finding(parsed.span(call.func), _call_message(entry), _call_fix(parsed, call, entry))
        for deprecated in table.keywords:
            if not qualified.startswith(deprecated.callees):
                continue
            keyword = next((k for k in call.keywords if k.arg == deprecated.keyword), None)
            if keyword is not None:
                yield this.finding(parsed.span(keyword), _keyword_message(deprecated),
                                   _keyword_fix(parsed, call, keyword, deprecated))


def _call_message(entry: DeprecatedCall) -> str:
    state = "was deprecated in {} and has been removed (calling it raises)" if entry.removed else "is deprecated since {}"
    text = f"`{entry.name}` " + state.format(entry.since)
    if entry.replacement:
        text += f"; use `{entry.replacement}`"
    return f"{text}: {entry.hint}" if entry.hint else text


def _keyword_message(entry: DeprecatedKeyword) -> str:
    text = f"`{entry.keyword}=` is deprecated since {entry.since}"
    if entry.replacement:
        text += f"; use `{entry.replacement}=`"
    return f"{text}: {entry.hint}" if entry.hint else text


def _call_fix(parsed: ParsedModule, call: ast.Call, entry: DeprecatedCall) -> Fix | None:
    if entry.replacement is None:
        return None
    if len(call.args) > len(entry.positional) and entry.positional:
        return None  # more positional arguments than the old signature names: leave it alone
    if entry.positional and any(isinstance(a, ast.Starred) for a in call.args):
        return None
    callee, import_edits = reference_to(parsed, entry.replacement)
    edits = [TextEdit(parsed.span(call.func), callee), *import_edits]
    arguments = sorted([*call.args, *call.keywords], key=lambda n: (n.lineno, n.col_offset))
    prefix = "".join(f"{a}, " for a in entry.prepend)
    if entry.list_args:
        if not arguments or call.keywords:
            return None
        edits.append(TextEdit(_empty_at(parsed.span(arguments[0]).start), prefix + "["))
        edits.append(TextEdit(_empty_at(parsed.span(arguments[-1]).end), "]"))
    elif not arguments:
        if prefix:
            edits.append(TextEdit(_empty_at(_inside_parentheses(parsed, call)), prefix[:-2]))
    else:
        for index, argument in enumerate(arguments):
            named = f"{entry.positional[index]}=" if index < len(call.args) and entry.positional else ""
            text = (prefix if index == 0 else "") + named
            if text:
                edits.append(TextEdit(_empty_at(parsed.span(argument).start), text))
    return Fix(f"Use `{entry.replacement}`", tuple(edits))


def _keyword_fix(parsed: ParsedModule, call: ast.Call, keyword: ast.keyword, entry: DeprecatedKeyword) -> Fix | None:
    if entry.replacement is None or any(k.arg == entry.replacement for k in call.keywords):
        return None
    value = keyword.value
    if isinstance(value, ast.Constant) and value.value is True and entry.when_true:
        new_value = entry.when_true
    elif isinstance(value, ast.Constant) and value.value is False and entry.when_false:
        new_value = entry.when_false
    elif entry.otherwise:
        new_value = entry.otherwise.format(value=parsed.code(value))
    else:
        return None
    return Fix(f"Use `{entry.replacement}={new_value}`",
               (TextEdit(parsed.span(keyword), f"{entry.replacement}={new_value}"),))


def reference_to(parsed: ParsedModule, dotted: str) -> tuple[str, list[TextEdit]]:
    """How this file can spell `dotted` (through its module-level imports), and the edits that
    add `import <root>` when no import covers it."""
    best: tuple[int, str] | None = None
    for local, module in module_level_imports(parsed).items():
        if dotted == module or dotted.startswith(module + "."):
            if best is None or len(module) > best[0]:
                best = (len(module), local + dotted[len(module):])
    if best is not None:
        return best[1], []
    root = dotted.split(".")[0]
    return dotted, [TextEdit(_empty_at(_import_position(parsed)), f"import {root}\n")]


def module_level_imports(parsed: ParsedModule) -> dict[str, str]:
    """Local name -> what it is bound to, for imports at the top level of the module only (an
    alias imported inside a function cannot be used elsewhere)."""
    top_level = [n for n in parsed.tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return _import_table(ast.Module(body=top_level, type_ignores=[]))


def _import_position(parsed: ParsedModule) -> Position:
    """Before the first module-level import that is not `from __future__`, else after the
    docstring and any `from __future__` imports."""
    after = 0
    for node in parsed.tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            after = node.end_lineno or node.lineno
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return Position(node.lineno - 1, 0)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str) and after == 0:
            after = node.end_lineno or node.lineno
            continue
        break
    return Position(after, 0)


def _inside_parentheses(parsed: ParsedModule, call: ast.Call) -> Position:
    end = parsed.span(call).end
    return Position(end.line, max(end.col - 1, 0))


def _empty_at(position: Position) -> Span:
    return Span(position, position)
