"""Which classes of a file get a synthesized call, and what the code says about them (pure).

Every `nn.Module` class with a `forward` is a probe candidate; the worker skips those whose
forward a driver already ran (shapes/synthesize.py). Each probe carries JSON-able hints:

- `size`: lines of the class (the worker probes the largest first: a model's call also runs
  its submodules' forwards);
- `end`, `forward`: the class's last line and its forward's body lines (first, last), 0-based:
  whether a report gives the forward shapes (shapes/probe_jobs.py);
- `uses`: the file's other probed classes named in the class's body (`ResnetBlock(...)` in
  `Unet`): probed in the same job, after it, they are usually reached by its call;
- `inputs`: what the user stated (analysis/stated_inputs.py);
- `sites`: construction sites in the file, `Net(3, num_classes=10)`, as argument source texts;
- `argparse`: defaults of the file's `add_argument` options (for `Net(args)`).
"""

from __future__ import annotations

import ast

from torch_lsp.analysis.modules import module_facts
from torch_lsp.analysis.node_index import breadth_first, nodes
from torch_lsp.analysis.stated_inputs import stated_inputs
from torch_lsp.analysis.syntax import ParsedModule

MAX_SITES = 4


def probe_hints(parsed: ParsedModule, settings_inputs: dict | None = None, workspace_defaults: dict | None = None) -> list[dict]:
    """[{class_name, line, hints}] for the file's module classes that have a forward.
    `workspace_defaults`: argparse defaults the workspace's other files declare (the file's own win)."""
    facts = module_facts(parsed)
    sites = construction_sites(parsed, set(facts.classes))
    defaults = {**(workspace_defaults or {}), **argparse_defaults(parsed)}
    probed = [cls for cls in facts.classes.values() if cls.forward is not None
              and not parsed.enclosing(cls.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    names = {cls.name for cls in probed}  # classes nested in functions or classes cannot be reached by name
    out = []
    for cls in probed:
        forward = cls.forward
        hints = {"size": cls.node.end_lineno - cls.node.lineno + 1, "end": cls.node.end_lineno - 1,
                 "forward": [forward.body[0].lineno - 1, forward.end_lineno - 1],
                 "uses": sorted({n.id for n in nodes(parsed, ast.Name, cls.node) if n.id in names} - {cls.name}),
                 "inputs": {k: list(v) for k, v in stated_inputs(parsed.lines, cls.node, forward, settings_inputs).items()},
                 "sites": sites.get(cls.name, [])[:MAX_SITES], "argparse": defaults}
        out.append({"class_name": cls.name, "line": cls.node.lineno - 1, "hints": hints})
    return out


def construction_sites(parsed: ParsedModule, classes: set[str]) -> dict[str, list[dict]]:
    """Class name -> calls that construct it: {"args": [source], "kwargs": {name: source}}."""
    out: dict[str, list[dict]] = {}
    calls = [n for n in nodes(parsed, ast.Call) if isinstance(n.func, ast.Name) and n.func.id in classes]
    for node in breadth_first(parsed, calls):  # the order they always had: the first few are kept
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            continue
        out.setdefault(node.func.id, []).append({
            "args": [parsed.code(a) for a in node.args],
            "kwargs": {k.arg: parsed.code(k.value) for k in node.keywords}})
    return out


def argparse_defaults(parsed: ParsedModule) -> dict:
    """`parser.add_argument('--batch-size', type=int, default=64)` -> {"batch_size": 64}: the
    literal defaults (and `False` for `store_true` flags) of every option the file declares."""
    out: dict = {}
    calls = [n for n in nodes(parsed, ast.Call) if isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument"]
    for node in breadth_first(parsed, calls):  # as ast.walk met them: a later option of one dest wins
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        dest = _literal(keywords.get("dest")) if "dest" in keywords else None
        if not isinstance(dest, str):
            longs = [f for f in flags if f.startswith("--")]
            name = (longs or flags or [""])[0].lstrip("-")
            dest = name.replace("-", "_") if name else None
        if not dest:
            continue
        action = _literal(keywords.get("action")) if "action" in keywords else None
        if "default" in keywords:
            value = _literal(keywords["default"])
            if value is None or isinstance(value, (bool, int, float, str, list, tuple)):
                out[dest] = list(value) if isinstance(value, tuple) else value
        elif action in ("store_true", "store_false"):
            out[dest] = action == "store_false"
        elif "choices" in keywords:
            choices = _literal(keywords["choices"])
            if isinstance(choices, (list, tuple)) and choices:
                out[dest] = choices[0]
    return out


_NOT_LITERAL = object()


def _literal(node: ast.AST | None):
    if node is None:
        return _NOT_LITERAL
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


# -- argparse defaults across the workspace ------------------------------------------------------

MAX_FILES = 400  # files looked at per workspace (a huge tree is not scanned whole)
MAX_BYTES = 400_000
_SKIPPED_FOLDERS = {"__pycache__", "node_modules", "site-packages", "dist-packages", "build", "dist"}
_cache: dict[str, tuple[float, dict]] = {}  # path -> (mtime, its defaults)


def workspace_argparse_defaults(root: str | None, document: str) -> dict:
    """The argparse defaults of the workspace's files (`main.py`'s `--hidden_dim 256` for a model
    file built with `build_model(args)`), nearest files to the document first."""
    import os

    if not root or not os.path.isdir(root):
        return {}
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_FOLDERS and "venv" not in d)
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
        if len(files) >= MAX_FILES:
            break
    here = os.path.dirname(os.path.abspath(document))
    files.sort(key=lambda f: (os.path.relpath(os.path.dirname(f), here).count(os.sep), f))
    out: dict = {}
    for path in files[:MAX_FILES]:
        if os.path.abspath(path) != os.path.abspath(document):
            for key, value in _file_defaults(path).items():
                out.setdefault(key, value)
    return out


def _file_defaults(path: str) -> dict:
    import os

    from torch_lsp.analysis.syntax import parse_private

    try:
        stat = os.stat(path)
        if stat.st_size > MAX_BYTES:
            return {}
        cached = _cache.get(path)
        if cached is not None and cached[0] == stat.st_mtime:
            return cached[1]
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError:
        return {}
    # Not through parse's cache: up to 400 files, each read once per change, kept only as defaults.
    parsed = parse_private(text) if "add_argument" in text else None
    defaults = argparse_defaults(parsed) if isinstance(parsed, ParsedModule) else {}
    _cache[path] = (stat.st_mtime, defaults)
    return defaults
