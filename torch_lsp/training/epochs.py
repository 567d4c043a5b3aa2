"""How many epochs will this run have? Read from the script's own loop, at run time.

Loaded by launch.py beside probe.py as ``_torch_lsp_epochs`` (standard library only). When
the first loss is seen, the probe walks the call stack through the user's files and finds the
``for ... in range(...)`` loop that encloses the loop over the DataLoader (``for epoch in
range(args.epochs): for x, y in loader: ...``), possibly in a caller frame. The range
arguments are evaluated in that frame, but only when they are plain names, attributes,
constants, subscripts, arithmetic, and calls of int/float/len/min/max/round or environment
look-ups (``int(os.environ.get("EPOCHS", 10))``): nothing that could run the user's code twice.
"""

from __future__ import annotations

import ast
import os
import sysconfig

_NOT_USER_DIRS = tuple(
    os.path.abspath(p) + os.sep
    for p in {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    if p
) + (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,)

_SAFE_NODES = (ast.Expression, ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.BinOp,
               ast.UnaryOp, ast.Load, ast.operator, ast.unaryop, ast.Call)
# The only calls allowed: conversions and environment look-ups (`int(os.environ.get("EPOCHS", 10))`).
_SAFE_CALLS = {"int", "float", "len", "min", "max", "round", "os.environ.get", "os.getenv",
               "environ.get", "getenv"}


class EpochCounter:
    _user_files: set[str] = set()
    _trees: dict[str, ast.AST | None] = {}

    def __init__(self) -> None:
        self.total: int | None = None

    @classmethod
    def add_user_file(cls, filename: str) -> None:
        cls._user_files.add(os.path.abspath(filename))

    @classmethod
    def is_user_file(cls, filename: str) -> bool:
        if filename in cls._user_files:
            return True
        if filename.startswith("<") or not filename.endswith(".py"):
            return False
        if f"{os.sep}site-packages{os.sep}" in filename or f"{os.sep}dist-packages{os.sep}" in filename:
            return False
        return not filename.startswith(_NOT_USER_DIRS)

    @classmethod
    def _tree(cls, filename: str):
        if filename not in cls._trees:
            try:
                with open(filename, encoding="utf-8") as handle:
                    cls._trees[filename] = ast.parse(handle.read())
            except (OSError, SyntaxError, ValueError):
                cls._trees[filename] = None
        return cls._trees[filename]

    def detect_total(self, frame) -> None:
        """Find the epoch loop around the current line; never raises."""
        try:
            self.total = self._detect(frame)
        except Exception:  # a guess that failed must never disturb the training
            self.total = None

    def _detect(self, frame) -> int | None:
        loops = []  # (for node, frame), outermost first
        stack = []
        while frame is not None:
            stack.append(frame)
            frame = frame.f_back
        for frame in reversed(stack):
            filename = os.path.abspath(frame.f_code.co_filename)
            if not self.is_user_file(filename):
                continue
            tree = self._tree(filename)
            if tree is None:
                continue
            line = frame.f_lineno
            enclosing = [
                node for node in ast.walk(tree)
                if isinstance(node, ast.For) and node.lineno < line <= (node.end_lineno or 0)
            ]
            enclosing.sort(key=lambda node: node.lineno)
            loops.extend((node, frame) for node in enclosing)
        ranged = [(i, node, frame) for i, (node, frame) in enumerate(loops) if _range_args(node)]
        if not ranged:
            return None
        others = [i for i, (node, _) in enumerate(loops) if not _range_args(node)]
        if others:
            loader_loop = others[-1]
            candidates = [entry for entry in ranged if entry[0] < loader_loop]
        else:
            candidates = ranged[:1]
        if not candidates:
            return None
        _, node, frame = candidates[-1]
        args = [_safe_eval(arg, frame) for arg in _range_args(node)]
        if any(not isinstance(a, int) for a in args):
            return None
        return len(range(*args))


def _range_args(node: ast.For) -> list[ast.expr] | None:
    """Arguments of ``range(...)``/``trange(...)``, also inside ``tqdm(range(...))``/``enumerate``."""
    call = node.iter
    while isinstance(call, ast.Call):
        name = _callee_name(call)
        if name in ("range", "trange"):
            return list(call.args) if call.args and not call.keywords else None
        if name in ("tqdm", "enumerate") and call.args:
            call = call.args[0]
            continue
        return None
    return None


def _callee_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _safe_eval(expr: ast.expr, frame):
    tree = ast.Expression(expr)
    if not all(isinstance(node, _SAFE_NODES) for node in ast.walk(tree)):
        return None
    if any(isinstance(node, ast.Call) and (node.keywords or ast.unparse(node.func) not in _SAFE_CALLS)
           for node in ast.walk(tree)):
        return None
    code = compile(ast.fix_missing_locations(tree), "<epochs>", "eval")
    return eval(code, frame.f_globals, dict(frame.f_locals))
