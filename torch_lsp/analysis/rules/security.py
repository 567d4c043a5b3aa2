"""Calls that run arbitrary code from data files (TL301)."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re

from torch_lsp.analysis.facts import Fix, Severity
from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.rules import REGISTRY, RuleContext, rule
from torch_lsp.analysis.rules._edits import add_keyword_argument

_TORCH_LOAD = ("torch.load", "torch.serialization.load")
# torch 2.6 changed torch.load's default to weights_only=True.
_SAFE_DEFAULT_SINCE = (2, 6)


@functools.cache
def installed_torch_version() -> tuple[int, int] | None:
    """(major, minor) of the installed torch, read from its metadata: the server never imports
    torch (that costs seconds and ~500 MB). None when torch is not installed."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def load_defaults_to_weights_only() -> bool:
    version = installed_torch_version()
    return version is not None and version >= _SAFE_DEFAULT_SINCE


@rule("TL301", "unsafe-torch-load", Severity.WARNING,
      "torch.load may unpickle arbitrary code: pass weights_only=True.", fixable=True, scope="statement")
def unsafe_torch_load(ctx: RuleContext):
    """
    ## What it does
    Finds `torch.load(...)` calls that unpickle arbitrary objects:

    - `weights_only=False` written explicitly (always reported; no automatic fix, since a
      checkpoint holding your own classes needs `torch.serialization.add_safe_globals`);
    - no `weights_only` argument, when the installed torch is older than 2.6. torch 2.6
      changed the default to `weights_only=True`; the rule reads the installed version (from
      package metadata, without importing torch) and applies that default, so with torch >=
      2.6 an omitted argument is safe and not reported.

    Calls that pass `pickle_module=` (a custom unpickler is a deliberate choice) or
    `**kwargs` are not reported.

    ## Why is this bad?
    Checkpoints are pickle files. Unpickling runs whatever code the file says: a downloaded
    or shared `.pt` file can execute commands on your machine the moment it is loaded.
    `weights_only=True` restricts loading to tensors, primitive types and allow-listed
    classes, which is all a `state_dict` needs.

    ## Example
    ```python
    state = torch.load("model.pt")          # torch < 2.6
    state = torch.load("model.pt", weights_only=False)
    ```

    ## Use instead
    ```python
    state = torch.load("model.pt", weights_only=True)
    ```

    ## Fix
    Adds `weights_only=True` when the argument is missing. Suppress with
    `# torch-lsp: ignore[TL301]` for files you created yourself and trust.
    """
    this = REGISTRY["TL301"]
    parsed = ctx.parsed
    for call in nodes(parsed, ast.Call):
        if not parsed.resolves_to(call.func, *_TORCH_LOAD):
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        if None in keywords or "pickle_module" in keywords or len(call.args) >= 3:
            continue
        weights_only = keywords.get("weights_only")
        span = parsed.span(call.func)
        if isinstance(weights_only, ast.Constant) and weights_only.value is False:
            yield this.finding(parsed.span(weights_only), "`weights_only=False` unpickles arbitrary objects: loading an "
                               "untrusted file can run code on this machine; load with `weights_only=True` (allow your "
                               "own classes with `torch.serialization.add_safe_globals`)")
        elif (weights_only is None or _is_none(weights_only)) and not load_defaults_to_weights_only():
            version = installed_torch_version()
            installed = f"the installed torch {version[0]}.{version[1]}" if version else "torch before 2.6"
            fix = None if weights_only is not None else Fix(  # weights_only=None: the user edits it
                "Add `weights_only=True`", (add_keyword_argument(parsed, call, "weights_only=True"),))
            yield this.finding(span, f"`torch.load` without `weights_only=True` unpickles arbitrary objects with "
                               f"{installed} (the default became True in torch 2.6): a malicious checkpoint can run "
                               f"code; pass `weights_only=True`", fix)


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None
