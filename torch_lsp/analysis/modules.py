"""nn.Module facts: which classes are modules, the layers they build, what `forward` returns.

Pure `ast` over one file, resolved through imports (`nn.Linear` with `from torch import nn` is
`torch.nn.Linear`). Rules use it to know what a model outputs (TL108: logits or
probabilities?) and which attributes are submodules (TL107); the shape engine and code actions
can read the layers and `forward`'s signature.

What `forward` returns is reported as an `Output`: the normalising activation applied last
(`softmax`, `log_softmax`, `sigmoid`), `OTHER` when the last operation is known and is none of
those (a Linear layer, a torchvision model), or None when it cannot be known (a helper
function, disagreeing return statements, tuples). Unknown is never guessed: rules stay quiet.
"""

from __future__ import annotations

import ast
import enum
import functools
from dataclasses import dataclass, field

from torch_lsp.analysis.node_index import breadth_first, nodes
from torch_lsp.analysis.syntax import ParsedModule, derived

_MODULE_BASES = {
    "torch.nn.Module", "torch.nn.modules.module.Module",
    "pytorch_lightning.LightningModule", "lightning.LightningModule", "lightning.pytorch.LightningModule",
}
_CONTAINERS = {"torch.nn.Sequential", "torch.nn.ModuleList", "torch.nn.ModuleDict"}
# Layers whose output is the same kind of value as their input (probabilities stay probabilities).
_PASS_THROUGH_LAYERS = {"torch.nn.Dropout", "torch.nn.Dropout1d", "torch.nn.Dropout2d", "torch.nn.Dropout3d",
                        "torch.nn.AlphaDropout", "torch.nn.FeatureAlphaDropout", "torch.nn.Identity",
                        "torch.nn.Flatten", "torch.nn.Unflatten"}
_SAME_TENSOR_METHODS = {"to", "cuda", "cpu", "float", "half", "double", "contiguous", "squeeze", "unsqueeze", "view",
                        "reshape", "flatten"}


class Activation(str, enum.Enum):
    SOFTMAX = "softmax"
    LOG_SOFTMAX = "log_softmax"
    SIGMOID = "sigmoid"
    OTHER = "other"  # known, and not a normalising activation (logits)


# Callables (functions and module classes) that apply a normalising activation.
_ACTIVATION_CALLS = {
    "torch.softmax": Activation.SOFTMAX, "torch.nn.functional.softmax": Activation.SOFTMAX,
    "torch.special.softmax": Activation.SOFTMAX, "torch.nn.Softmax": Activation.SOFTMAX,
    "torch.log_softmax": Activation.LOG_SOFTMAX, "torch.nn.functional.log_softmax": Activation.LOG_SOFTMAX,
    "torch.special.log_softmax": Activation.LOG_SOFTMAX, "torch.nn.LogSoftmax": Activation.LOG_SOFTMAX,
    "torch.sigmoid": Activation.SIGMOID, "torch.nn.functional.sigmoid": Activation.SIGMOID,
    "torch.special.expit": Activation.SIGMOID, "torch.nn.Sigmoid": Activation.SIGMOID,
}
_ACTIVATION_METHODS = {"softmax": Activation.SOFTMAX, "log_softmax": Activation.LOG_SOFTMAX,
                       "sigmoid": Activation.SIGMOID}


@dataclass(frozen=True)
class Output:
    """What a value is, as far as the loss is concerned, and the node that made it so."""

    activation: Activation
    node: ast.AST  # the activation call (or the layer/model call for OTHER)


@dataclass(frozen=True)
class Layer:
    """`self.<attribute> = <constructor>(<args>)` in `__init__`."""

    attribute: str
    constructor: str  # qualified name: torch.nn.Conv2d, or a local class name
    call: ast.Call
    assignment: ast.stmt

    @property
    def args(self) -> list[ast.expr]:
        return self.call.args

    @property
    def keywords(self) -> dict[str, ast.expr]:
        return {k.arg: k.value for k in self.call.keywords if k.arg}


@dataclass
class ModuleClass:
    name: str
    node: ast.ClassDef
    bases: tuple[str, ...]
    layers: dict[str, Layer] = field(default_factory=dict)
    forward: ast.FunctionDef | ast.AsyncFunctionDef | None = None

    @property
    def forward_parameters(self) -> list[ast.arg]:
        """forward's parameters after `self` (positional, then keyword-only)."""
        if self.forward is None:
            return []
        args = self.forward.args
        return (args.posonlyargs + args.args)[1:] + args.kwonlyargs


class ModuleFacts:
    def __init__(self, parsed: ParsedModule):
        self.parsed = parsed
        class_nodes = self._module_class_nodes()
        self.class_names = {cls.name for cls in class_nodes}
        self.classes: dict[str, ModuleClass] = {cls.name: self._describe(cls) for cls in class_nodes}
        for cls in self.classes.values():
            self._inherit(cls, set())
        self._outputs: dict[str, Output | None] = {}

    # -- which classes are modules ------------------------------------------------------------
    def _module_class_nodes(self) -> list[ast.ClassDef]:
        classes = list(nodes(self.parsed, ast.ClassDef))
        found: dict[str, ast.ClassDef] = {}
        changed = True
        while changed:  # a class deriving from a local module class is a module too
            changed = False
            for cls in classes:
                if cls.name not in found and any(self._is_module_base(b, found) for b in cls.bases):
                    found[cls.name] = cls
                    changed = True
        return [c for c in classes if c.name in found]

    def _is_module_base(self, base: ast.expr, local: dict[str, ast.ClassDef]) -> bool:
        qualified = self.parsed.qualified_name(base) or ""
        last = qualified.rsplit(".", 1)[-1]
        return (qualified in _MODULE_BASES or qualified in local
                or (qualified.startswith(("torch.nn.", "torchvision.models.")) and last[:1].isupper()))

    def _describe(self, cls: ast.ClassDef) -> ModuleClass:
        bases = tuple(self.parsed.qualified_name(b) or "" for b in cls.bases)
        described = ModuleClass(cls.name, cls, bases)
        for statement in cls.body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if statement.name == "forward":
                    described.forward = statement
                elif statement.name == "__init__":
                    described.layers = self._layers(statement)
        return described

    def _inherit(self, cls: ModuleClass, seen: set[str]) -> None:
        """Layers and forward a subclass gets from local base classes (its own win)."""
        seen.add(cls.name)
        for base in reversed(cls.bases):
            parent = self.classes.get(base)
            if parent is None or parent.name in seen:
                continue
            self._inherit(parent, seen)
            cls.layers = {**parent.layers, **cls.layers}
            if cls.forward is None:
                cls.forward = parent.forward

    def _layers(self, init: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, Layer]:
        layers: dict[str, Layer] = {}
        assignments = list(nodes(self.parsed, (ast.Assign, ast.AnnAssign), init))
        for node in sorted(assignments, key=lambda n: (n.lineno, n.col_offset)):  # definition order
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if len(targets) != 1 or not isinstance(value, ast.Call):
                continue
            target = targets[0]
            if not (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"):
                continue
            constructor = self.constructor_of(value)
            if constructor is not None:
                layers[target.attr] = Layer(target.attr, constructor, value, node)
        return layers

    def constructor_of(self, call: ast.Call) -> str | None:
        """The qualified module class a call builds: `nn.Linear(...)`, `Net()`, `resnet18()`."""
        qualified = self.parsed.qualified_name(call.func)
        if qualified is None:
            return None
        last = qualified.rsplit(".", 1)[-1]
        if qualified.startswith("torch.nn.") and last[:1].isupper() and not last.endswith("Loss"):
            return qualified
        if qualified.startswith("torchvision.models.") or qualified in self.class_names:
            return qualified
        return None

    # -- what a module outputs ----------------------------------------------------------------
    def output_of_class(self, name: str) -> Output | None:
        """The activation `name.forward` applies last, if it can be known."""
        if name in self._outputs:
            return self._outputs[name]
        self._outputs[name] = None  # recursion guard for modules that call themselves
        cls = self.classes.get(name)
        result = None
        if cls is not None and cls.forward is not None:
            returns = [n.value for n in breadth_first(self.parsed, nodes(self.parsed, ast.Return, cls.forward))
                       if n.value is not None
                       and self.parsed.enclosing(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) is cls.forward]
            outputs = [self.output_of(value, cls) for value in returns]
            if outputs and all(o is not None for o in outputs) and len({o.activation for o in outputs}) == 1:
                result = outputs[-1]
        self._outputs[name] = result
        return result

    def output_of_constructed(self, constructor: str, call: ast.Call | None, owner: ModuleClass | None = None) -> Output | None:
        """What calling a module built by `call` (a `constructor` instance) returns."""
        if constructor in _ACTIVATION_CALLS:
            return Output(_ACTIVATION_CALLS[constructor], call or ast.Pass())
        if constructor == "torch.nn.Sequential":
            if call is None or not call.args or any(isinstance(a, ast.Starred) for a in call.args):
                return None
            for last in reversed(call.args):  # the last layer that changes what the values are
                inner = self.constructor_of(last) if isinstance(last, ast.Call) else None
                if inner is None:
                    return None
                if inner not in _PASS_THROUGH_LAYERS:
                    return self.output_of_constructed(inner, last, owner)
            return None
        if constructor in _PASS_THROUGH_LAYERS:
            return None  # its output is its input: the caller has to look at the argument
        if constructor in self.classes:
            return self.output_of_class(constructor)
        if constructor in _CONTAINERS:
            return None
        if constructor.startswith(("torch.nn.", "torchvision.models.")):
            return Output(Activation.OTHER, call or ast.Pass())
        return None

    def output_of(self, expr: ast.AST, owner: ModuleClass | None = None, _depth: int = 0) -> Output | None:
        """What `expr` evaluates to, inside `owner`'s methods when given (for `self.fc`)."""
        if _depth > 12:
            return None
        if isinstance(expr, ast.Name):
            value = reaching_value(self.parsed, expr)
            return self.output_of(value, owner, _depth + 1) if value is not None else None
        if not isinstance(expr, ast.Call):
            return None
        func = expr.func
        qualified = self.parsed.qualified_name(func) or ""
        if qualified in _ACTIVATION_CALLS and not qualified.rsplit(".", 1)[-1][:1].isupper():
            return Output(_ACTIVATION_CALLS[qualified], expr)
        if isinstance(func, ast.Attribute):
            tensor_method = not _is_self(func.value) and not is_imported_name(self.parsed, func.value)
            if func.attr in _ACTIVATION_METHODS and tensor_method:
                return Output(_ACTIVATION_METHODS[func.attr], expr)
            if func.attr in _SAME_TENSOR_METHODS and tensor_method:
                return self.output_of(func.value, owner, _depth + 1)
            if owner is not None and _is_self(func.value) and func.attr in owner.layers:
                layer = owner.layers[func.attr]
                if layer.constructor in _ACTIVATION_CALLS:  # self.softmax(x): the call site applies it
                    return Output(_ACTIVATION_CALLS[layer.constructor], expr)
                if layer.constructor in _PASS_THROUGH_LAYERS:  # self.dropout(x) is still x
                    return self.output_of(expr.args[0], owner, _depth + 1) if len(expr.args) == 1 else None
                return self.output_of_constructed(layer.constructor, layer.call, owner)
        if owner is not None and _is_self(func):  # self(x) inside a module calls its forward
            return self.output_of_class(owner.name)
        if isinstance(func, ast.Call):  # nn.Softmax(dim=1)(x), Net()(x)
            constructor = self.constructor_of(func)
            return self.output_of_constructed(constructor, func, owner) if constructor else None
        return None


def is_imported_name(parsed: ParsedModule, expr: ast.AST) -> bool:
    """True when the root of `expr` (`np` in `np.random`) is a name bound by an import."""
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return isinstance(expr, ast.Name) and expr.id in parsed.imports


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def reaching_value(parsed: ParsedModule, name: ast.Name) -> ast.AST | None:
    """The value last assigned to `name` before it is read, in the same function (or module).

    Straight-line approximation: the assignment with the greatest position before the use,
    anywhere in the enclosing scope. Good enough to follow `out = model(x); loss(out, y)`;
    names bound by loops, `with` or tuple unpacking have no single value and give None.
    """
    scope = parsed.enclosing(name, _SCOPES) or parsed.tree
    use = (name.lineno, name.col_offset)
    best: tuple[tuple[int, int], ast.AST | None] | None = None
    for where, value in _assignments_in(parsed, scope).get(name.id, ()):
        if where < use and (best is None or where > best[0]):
            best = (where, value)
    return best[1] if best else None


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_BINDING_NODES = (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr, ast.For, ast.AsyncFor, ast.With, ast.AsyncWith)
Assignments = dict[str, list[tuple[tuple[int, int], "ast.AST | None"]]]


def _assignments_in(parsed: ParsedModule, scope: ast.AST) -> Assignments:
    """Name -> [(position, value or None when the binding has no single value)] for one scope
    (a function, a lambda or the module), built on first use. Per scope, not per file: a rule
    asking about one function reads that function only (incremental analysis relies on it)."""
    cache = parsed.__dict__.setdefault("_scope_assignments", {})
    table = cache.get(id(scope))
    if table is None:
        table = cache[id(scope)] = {}
        if scope is parsed.tree:  # module-level code: the statements that are not definitions
            candidates = (node for statement in parsed.tree.body if not isinstance(statement, _DEFINITIONS)
                          for node in nodes(parsed, _BINDING_NODES, statement))
        else:
            candidates = nodes(parsed, _BINDING_NODES, scope)
        for node in candidates:
            owner = parsed.enclosing(node, _SCOPES + (ast.ClassDef,)) or parsed.tree
            if owner is not scope:
                continue  # a nested function's, or a class body's (not visible from methods)
            for bound, value in _bound_names(node):
                table.setdefault(bound, []).append(((node.lineno, node.col_offset), value))
    return table


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _bound_names(node: ast.AST):
    """(name, value) for each name `node` binds; value None when there is no single value."""
    if isinstance(node, ast.Assign):
        for target in node.targets:
            if isinstance(target, ast.Name):
                yield target.id, node.value
            else:
                yield from ((n, None) for n in _target_names(target))
    elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and isinstance(node.target, ast.Name):
        yield node.target.id, node.value
    elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
        yield node.target.id, None
    elif isinstance(node, (ast.For, ast.AsyncFor, ast.With, ast.AsyncWith)):
        targets = [node.target] if isinstance(node, (ast.For, ast.AsyncFor)) else [
            i.optional_vars for i in node.items if i.optional_vars is not None]
        for target in targets:
            yield from ((n, None) for n in _target_names(target))


def _target_names(target: ast.AST) -> list[str]:
    """Names an assignment target binds (`a, (b, *c)`), not the bases of `self.x` or `d[k]`."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for element in target.elts for n in _target_names(element)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


def module_facts(parsed: ParsedModule) -> ModuleFacts:
    """Module facts for a parsed file, computed once per parse (parses are cached by text).
    A focused module (analysis/incremental.py) answers with its whole module's: a model's class
    may be reached through a file-wide binding, from anywhere."""
    return derived(parsed, "modules", ModuleFacts)
