"""Training-code facts: which names are models, optimizers, schedulers, losses and loaders, and
what each loop does, in order, with helper functions called from the loop inlined.

Everything is resolved through imports (`optim.SGD` with `import torch.optim as optim` is an
optimizer; an `SGD` class of your own is not), through assignments (`opt = optimizer`), through
helper functions that return one (`opt = make_optimizer(model)`) and through call sites of
helpers that receive one (`train(model, loader, optimizer)` types `train`'s parameters).
"""

from __future__ import annotations

import ast
import enum
import functools
import re
from dataclasses import dataclass, field

from torch_lsp.analysis.node_index import contains, nodes
from torch_lsp.analysis.syntax import ParsedModule, target_key


class Kind(str, enum.Enum):
    MODEL = "model"
    OPTIMIZER = "optimizer"
    SCHEDULER = "scheduler"
    LOSS = "loss"
    LOADER = "loader"
    SCALER = "scaler"


# Constructors outside torch.optim that build optimizers.
_EXTERNAL_OPTIMIZER_PREFIXES = ("bitsandbytes.optim.", "timm.optim.", "apex.optimizers.", "torch_optimizer.")
_SCALERS = {"torch.cuda.amp.GradScaler", "torch.amp.GradScaler", "torch.cuda.amp.grad_scaler.GradScaler"}
# Method calls that return the receiver (or an equivalent module): `Net().to(device)`.
_PASS_THROUGH_METHODS = {"to", "cuda", "cpu", "train", "eval", "float", "half", "double", "bfloat16", "requires_grad_", "share_memory"}
_PASS_THROUGH_WRAPPERS = {"torch.compile", "torch.nn.DataParallel", "torch.nn.parallel.DistributedDataParallel",
                          "torch.nn.parallel.DataParallel"}
# Fallback for parameters of helpers that are never called in the file: the name is the only clue.
_PARAMETER_NAME_HINTS = {
    Kind.OPTIMIZER: re.compile(r"^(opt|optim|optimizer|\w+_optimizer|optimizer_\w+)$"),
    Kind.MODEL: re.compile(r"^(model|net|network|\w+_model|model_\w+)$"),
}


@dataclass(frozen=True)
class Binding:
    key: str
    kind: Kind
    value: ast.AST
    constructor: str  # qualified name of what built it, e.g. torch.optim.SGD
    model_key: str | None = None  # optimizer: the model whose parameters it updates
    optimizer_key: str | None = None  # scheduler: the optimizer it drives


class EventKind(str, enum.Enum):
    BACKWARD = "backward"
    STEP = "step"  # optimizer step
    ZERO_GRAD = "zero_grad"
    GRAD_NONE = "grad_none"  # p.grad = None / p.grad.zero_()
    SCHEDULER_STEP = "scheduler_step"
    CALL = "call"  # any other call, kept for rules that need the forward pass
    # Added for the loop-order and evaluation rules (TL102-TL106, TL110). These are emitted in
    # addition to the CALL event of the same call, so CALL consumers see what they always saw.
    FORWARD = "forward"  # a model called on inputs: `model(x)`, `self.net(x)`
    MODE_EVAL = "mode_eval"  # `model.eval()`, `model.train(False)`
    MODE_TRAIN = "mode_train"  # `model.train()`, `model.train(True)`
    MODE_SET = "mode_set"  # `model.train(flag)`: either mode, decided at run time


@dataclass(frozen=True)
class Event:
    kind: EventKind
    node: ast.AST  # the call (or assignment) itself, possibly inside a helper
    anchor: ast.AST  # the node in the loop body that leads to it (the helper call, or node)
    target: str | None  # receiver key: `optimizer` for optimizer.step()
    conditional: bool  # under an if/else or a try handler inside the loop
    via: tuple[str, ...] = ()  # helper functions inlined on the way


@dataclass
class Loop:
    node: ast.For | ast.AsyncFor | ast.While
    events: list[Event] = field(default_factory=list)
    inner: list["Loop"] = field(default_factory=list)

    def of(self, kind: EventKind, target: str | None = None) -> list[Event]:
        return [e for e in self.events if e.kind is kind and (target is None or e.target == target)]

    @property
    def body_start(self) -> ast.stmt:
        return self.node.body[0]


class TrainingFacts:
    def __init__(self, parsed: ParsedModule):
        self.parsed = parsed
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        for node in nodes(parsed, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.functions.setdefault(node.name, node)
        self.module_classes = self._module_classes()
        self.calls_by_name: dict[str, list[ast.Call]] = {}
        for call in nodes(parsed, ast.Call):
            if isinstance(call.func, ast.Name):
                self.calls_by_name.setdefault(call.func.id, []).append(call)
        self.bindings: dict[str, Binding] = {}
        self._collect_bindings()
        self.loops = self._collect_loops()

    # -- classification -----------------------------------------------------------------------
    def _module_classes(self) -> set[str]:
        """Classes in this file that are nn.Modules (directly or through other local classes)."""
        classes = {c.name: c for c in nodes(self.parsed, ast.ClassDef)}
        found: set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, cls in classes.items():
                if name in found:
                    continue
                for base in cls.bases:
                    qualified = self.parsed.qualified_name(base) or ""
                    if qualified in found or qualified in ("torch.nn.Module", "torch.nn.modules.module.Module") or (
                        qualified.startswith(("torch.nn.", "torchvision.models.")) and qualified[qualified.rfind(".") + 1 :][:1].isupper()
                    ):
                        found.add(name)
                        changed = True
                        break
        return found

    def classify(self, expr: ast.AST, _depth: int = 0) -> tuple[Kind, str, ast.Call | None] | None:
        """(kind, constructor, constructor call) of the value `expr` evaluates to, if known."""
        if _depth > 8:
            return None
        if isinstance(expr, (ast.Name, ast.Attribute)):
            key = target_key(expr)
            if key in self.bindings:
                b = self.bindings[key]
                return b.kind, b.constructor, b.value if isinstance(b.value, ast.Call) else None
            return None
        if not isinstance(expr, ast.Call):
            return None
        func = expr.func
        if isinstance(func, ast.Attribute) and func.attr in _PASS_THROUGH_METHODS:
            return self.classify(func.value, _depth + 1)
        qualified = self.parsed.qualified_name(func) or ""
        if qualified in _PASS_THROUGH_WRAPPERS and expr.args:
            return self.classify(expr.args[0], _depth + 1)
        kind = _kind_of_constructor(qualified, self.module_classes)
        if kind is not None:
            return kind, qualified, expr
        if isinstance(func, ast.Name) and func.id in self.functions:
            returned = self._returned(self.functions[func.id])
            if returned is not None:
                return self.classify(returned, _depth + 1)
        return None

    def _returned(self, function: ast.AST) -> ast.AST | None:
        """The last `return <value>` of a helper, looked up once per helper."""
        cache = self.__dict__.setdefault("_returns", {})
        if id(function) not in cache:
            returns = [n.value for n in nodes(self.parsed, ast.Return, function) if n.value is not None]
            cache[id(function)] = returns[-1] if returns else None
        return cache[id(function)]

    def kind_of(self, expr: ast.AST) -> Kind | None:
        found = self.classify(expr)
        return found[0] if found else None

    def key_kind(self, key: str | None) -> Kind | None:
        binding = self.bindings.get(key) if key else None
        return binding.kind if binding else None

    # -- bindings -----------------------------------------------------------------------------
    def _collect_bindings(self) -> None:
        # Two passes so that `opt = optimizer` after `optimizer = SGD(...)` and parameter typing
        # from call sites both see the first pass's results.
        for _ in range(2):
            for node in nodes(self.parsed, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if node.value is None or len(targets) != 1:
                    continue
                key = target_key(targets[0])
                found = self.classify(node.value)
                if key and found:
                    self._bind(key, found, node.value)
            self._bind_parameters()

    def _bind(self, key: str, found: tuple[Kind, str, ast.Call | None], value: ast.AST) -> None:
        kind, constructor, call = found
        model_key = optimizer_key = None
        if call is not None and call.args:
            first = call.args[0]
            if kind is Kind.OPTIMIZER:
                model_key = _parameters_owner(first)
            elif kind is Kind.SCHEDULER:
                optimizer_key = target_key(first)
        self.bindings[key] = Binding(key, kind, value, constructor, model_key, optimizer_key)

    def _bind_parameters(self) -> None:
        for name, function in self.functions.items():
            params = [a.arg for a in function.args.posonlyargs + function.args.args]
            if params and params[0] in ("self", "cls"):
                params = params[1:]
            for index, param in enumerate(params):
                if param in self.bindings:
                    continue
                kind = self._parameter_kind(name, function, index, param)
                if kind is not None:
                    self.bindings[param] = Binding(param, kind, function, "")

    def _parameter_kind(self, fname: str, function: ast.AST, index: int, param: str) -> Kind | None:
        for call in self.calls_by_name.get(fname, ()):
            arg = next((k.value for k in call.keywords if k.arg == param), None)
            if arg is None and index < len(call.args):
                arg = call.args[index]
            kind = self.kind_of(arg) if arg is not None else None
            if kind is not None:
                return kind
        annotation = next((a.annotation for a in function.args.args if a.arg == param and a.annotation), None)
        if annotation is not None:
            qualified = self.parsed.qualified_name(annotation) or ""
            if qualified.startswith("torch.optim.") and "lr_scheduler" not in qualified:
                return Kind.OPTIMIZER
            if qualified in ("torch.nn.Module",) or qualified.split(".")[-1] in self.module_classes:
                return Kind.MODEL
        for kind, pattern in _PARAMETER_NAME_HINTS.items():
            if pattern.match(param):
                return kind
        return None

    # -- loops --------------------------------------------------------------------------------
    def _collect_loops(self) -> list[Loop]:
        loops: dict[ast.AST, Loop] = {}
        for node in nodes(self.parsed, (ast.For, ast.AsyncFor, ast.While)):
            loop = Loop(node)
            loop.events = self.events_in(node.body, stop=node)
            loops[node] = loop
            outer = self.parsed.enclosing(node, (ast.For, ast.AsyncFor, ast.While, ast.FunctionDef, ast.AsyncFunctionDef))
            if outer in loops:
                loops[outer].inner.append(loop)
        return list(loops.values())

    def events_in(self, body: list[ast.stmt], stop: ast.AST, via: tuple[str, ...] = (), anchor: ast.AST | None = None,
                  conditional: bool = False) -> list[Event]:
        """The events of `body`, in source order, inlining local helpers (not nested defs)."""
        events: list[Event] = []
        for statement in body:
            outer = conditional or self._is_conditional(statement, stop)
            for node, guarded in self._executed_assignments_and_calls(statement):
                events.extend(self._events_of(node, anchor or node, outer or guarded, via, stop))
        return events

    def _executed_assignments_and_calls(self, statement: ast.AST):
        """(node, guarded) for the assignments and calls that run when `statement` runs, in
        source order; guarded: under an if/else, except handler or comprehension within it.

        Read from the file's node index (walking every node of every loop body again, with
        helpers inlined, was most of the cost of these facts on large files)."""
        if not contains(self.parsed, statement):  # a synthetic statement (lambda closures)
            yield from ((n, g) for n, g in _walk_executed_guarded(statement) if isinstance(n, (ast.Assign, ast.Call)))
            return
        if isinstance(statement, _SCOPES):
            return
        statement_guards = isinstance(statement, _GUARDS)
        for node in nodes(self.parsed, (ast.Assign, ast.Call), statement):
            guarded, executed = False, True
            for ancestor in self.parsed.ancestors(node) if node is not statement else ():
                if ancestor is statement:
                    guarded = guarded or statement_guards
                    break
                if isinstance(ancestor, _SCOPES):  # the body of a nested def or lambda
                    executed = False
                    break
                guarded = guarded or isinstance(ancestor, _GUARDS)
            if executed:
                yield node, guarded

    def _is_conditional(self, node: ast.AST, stop: ast.AST) -> bool:
        for ancestor in self.parsed.ancestors(node):
            if ancestor is stop:
                return False
            if isinstance(ancestor, (ast.If, ast.IfExp, ast.ExceptHandler, ast.comprehension)):
                return True
        return False

    def _events_of(self, node: ast.AST, anchor: ast.AST, conditional: bool, via: tuple[str, ...],
                   stop: ast.AST) -> list[Event]:
        if isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Attribute) and t.attr == "grad" for t in node.targets) and _is_none(node.value):
                return [Event(EventKind.GRAD_NONE, node, anchor, None, conditional, via)]
            return []
        if not isinstance(node, ast.Call):
            return []
        func = node.func
        events: list[Event] = []
        if isinstance(func, ast.Attribute):
            receiver = target_key(func.value)
            receiver_kind = self.key_kind(receiver) or self.kind_of(func.value)
            if func.attr == "backward":
                events.append(Event(EventKind.BACKWARD, node, anchor, receiver, conditional, via))
            elif func.attr == "zero_grad":
                events.append(Event(EventKind.ZERO_GRAD, node, anchor, receiver, conditional, via))
            elif func.attr == "zero_" and isinstance(func.value, ast.Attribute) and func.value.attr == "grad":
                events.append(Event(EventKind.GRAD_NONE, node, anchor, None, conditional, via))
            elif func.attr == "step" and receiver_kind is Kind.OPTIMIZER:
                events.extend(self._closure_events(node, anchor, conditional, via, stop))
                events.append(Event(EventKind.STEP, node, anchor, receiver, conditional, via))
            elif func.attr == "step" and receiver_kind is Kind.SCALER and node.args:
                events.append(Event(EventKind.STEP, node, anchor, target_key(node.args[0]), conditional, via))
            elif func.attr == "step" and receiver_kind is Kind.SCHEDULER:
                events.append(Event(EventKind.SCHEDULER_STEP, node, anchor, receiver, conditional, via))
        elif self.parsed.resolves_to(func, "torch.autograd.backward"):
            events.append(Event(EventKind.BACKWARD, node, anchor, None, conditional, via))
        if not events:
            events.append(Event(EventKind.CALL, node, anchor, target_key(func), conditional, via))
            extra = self.model_call_kind(node)
            if extra is not None:
                events.append(Event(extra, node, anchor, target_key(func.value if extra is not EventKind.FORWARD else func),
                                    conditional, via))
            helper = self._local_helper(func)
            if helper is not None and helper.name not in via and len(via) < 5:
                events.extend(self.events_in(helper.body, helper, via + (helper.name,), anchor, conditional))
        return events

    def _closure_events(self, call: ast.Call, anchor, conditional, via, stop) -> list[Event]:
        """`optimizer.step(closure)` runs the closure first (LBFGS and friends)."""
        closure = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "closure"), None)
        if isinstance(closure, ast.Name) and closure.id in self.functions:
            helper = self.functions[closure.id]
            return self.events_in(helper.body, helper, via + (helper.name,), anchor, conditional)
        if isinstance(closure, ast.Lambda):
            return self.events_in([ast.Expr(closure.body)], stop, via, anchor, conditional)
        return []

    def _local_helper(self, func: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        if isinstance(func, ast.Name):
            return self.functions.get(func.id)
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
            return self.functions.get(func.attr)
        return None

    # -- facts for the loop-order and evaluation rules -------------------------------------------
    def model_call_kind(self, call: ast.Call) -> EventKind | None:
        """FORWARD for `model(x)`, a MODE_* kind for `model.eval()` / `model.train(...)`."""
        func = call.func
        if isinstance(func, (ast.Name, ast.Attribute)) and self._is_model(func):
            return EventKind.FORWARD
        if not (isinstance(func, ast.Attribute) and func.attr in ("eval", "train") and self._is_model(func.value)):
            return None
        if func.attr == "eval":
            return EventKind.MODE_EVAL
        mode = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "mode"), None)
        if mode is None:
            return EventKind.MODE_TRAIN
        if isinstance(mode, ast.Constant) and isinstance(mode.value, bool):
            return EventKind.MODE_TRAIN if mode.value else EventKind.MODE_EVAL
        return EventKind.MODE_SET

    def _is_model(self, expr: ast.AST) -> bool:
        key = target_key(expr)
        if key is not None:  # a name or attribute chain: its binding decides (what classify would do)
            binding = self.bindings.get(key)
            return binding is not None and binding.kind is Kind.MODEL
        return self.kind_of(expr) is Kind.MODEL

    def canonical(self, key: str | None) -> str | None:
        """The key an alias stands for: `opt` after `opt = optimizer` -> `optimizer`."""
        seen = set()
        while key in self.bindings and key not in seen:
            seen.add(key)
            value = self.bindings[key].value
            if not isinstance(value, (ast.Name, ast.Attribute)) or target_key(value) not in self.bindings:
                break
            key = target_key(value)
        return key

    def target_of(self, event: Event, aliases: bool = True) -> str | None:
        """The event's receiver as the loop sees it: through aliases, and through the parameters
        of a helper inlined one level deep (`train_epoch(net)` runs `model.train()` on `net`)."""
        target = event.target
        if target and len(event.via) == 1 and isinstance(event.anchor, ast.Call):
            root, dot, rest = target.partition(".")
            argument = _argument_for(self.functions.get(event.via[0]), event.anchor, root)
            passed = target_key(argument) if argument is not None else None
            if passed:
                target = passed + dot + rest
        return self.canonical(target) if aliases else target

    def loop_of(self, node: ast.AST) -> Loop | None:
        """The innermost loop whose body runs `node`."""
        enclosing = self.parsed.enclosing(node, (ast.For, ast.AsyncFor, ast.While))
        if enclosing is None or node is getattr(enclosing, "iter", None) or node is getattr(enclosing, "test", None):
            return None
        return self._loops_by_node.get(enclosing)

    @functools.cached_property
    def _loops_by_node(self) -> dict[ast.AST, Loop]:
        return {loop.node: loop for loop in self.loops}

    def once_per_iteration(self, loop: Loop, event: Event) -> bool:
        """True when `event` runs once per iteration of `loop`, not inside a loop nested in it."""
        start = event.anchor if event.via else event.node
        innermost = self.parsed.enclosing(start, (ast.For, ast.AsyncFor, ast.While))
        if innermost is not loop.node:
            return False
        if event.via:  # inside a helper: no loop between the helper's def and the event
            inner = self.parsed.enclosing(event.node, (ast.For, ast.AsyncFor, ast.While, ast.FunctionDef,
                                                       ast.AsyncFunctionDef, ast.Lambda))
            return not isinstance(inner, (ast.For, ast.AsyncFor, ast.While))
        return True

    def argument_sources(self, function: ast.AST, param: str) -> list[ast.AST]:
        """The expressions passed for `param` at the file's call sites of `function`."""
        args = [a.arg for a in function.args.posonlyargs + function.args.args]
        offset = 1 if args and args[0] in ("self", "cls") else 0
        if param not in args:
            return []
        index = args.index(param) - offset
        sources = []
        for call in self.calls_by_name.get(function.name, ()):
            arg = next((k.value for k in call.keywords if k.arg == param), None)
            if arg is None and 0 <= index < len(call.args):
                arg = call.args[index]
            if arg is not None:
                sources.append(arg)
        return sources


def _argument_for(function: ast.AST | None, call: ast.Call, param: str) -> ast.AST | None:
    """The expression `call` passes for `function`'s parameter `param` (self not counted)."""
    if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    params = [a.arg for a in function.args.posonlyargs + function.args.args]
    if isinstance(call.func, ast.Attribute) and params and params[0] in ("self", "cls"):
        params = params[1:]
    keyword = next((k.value for k in call.keywords if k.arg == param), None)
    if keyword is not None or param not in params:
        return keyword
    index = params.index(param)
    return call.args[index] if index < len(call.args) and not isinstance(call.args[index], ast.Starred) else None


def _kind_of_constructor(qualified: str, module_classes: set[str]) -> Kind | None:
    last = qualified.rsplit(".", 1)[-1]
    if qualified in _SCALERS:
        return Kind.SCALER
    if qualified.startswith("torch.optim.lr_scheduler.") or qualified.startswith("transformers.get_") and "schedule" in qualified:
        return Kind.SCHEDULER
    if (qualified.startswith("torch.optim.") and last[:1].isupper() and last != "Optimizer") or qualified.startswith(
        _EXTERNAL_OPTIMIZER_PREFIXES
    ):
        return Kind.OPTIMIZER
    if qualified == "torch.utils.data.DataLoader":
        return Kind.LOADER
    if qualified.startswith("torch.nn.") and last.endswith("Loss"):
        return Kind.LOSS
    if qualified.startswith("torchvision.models.") or (qualified.startswith("torch.nn.") and last[:1].isupper()):
        return Kind.MODEL
    if qualified in module_classes:
        return Kind.MODEL
    return None


def _parameters_owner(expr: ast.AST) -> str | None:
    """`net.parameters()` -> `net`; `[{'params': model.fc.parameters()}]` -> `model.fc`."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
            "parameters", "named_parameters"
        ):
            return target_key(node.func.value)
    return None


def _returned_expression(function: ast.AST) -> ast.AST | None:
    returns = [n.value for n in ast.walk(function) if isinstance(n, ast.Return) and n.value is not None]
    return returns[-1] if returns else None


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


_GUARDS = (ast.If, ast.IfExp, ast.ExceptHandler, ast.comprehension)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _walk_executed_guarded(statement: ast.AST):
    """Nodes that run when `statement` runs (not the bodies of nested defs, lambdas, classes),
    each with whether an if/else, except handler or comprehension guards it."""
    stack: list[tuple[ast.AST, bool]] = [(statement, False)]
    while stack:
        node, guarded = stack.pop()
        yield node, guarded
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        inner = guarded or isinstance(node, _GUARDS)
        stack.extend((child, inner) for child in reversed(list(ast.iter_child_nodes(node))))


@functools.lru_cache(maxsize=16)
def _facts_cached(parsed: ParsedModule) -> TrainingFacts:
    return TrainingFacts(parsed)


def training_facts(parsed: ParsedModule) -> TrainingFacts:
    """Facts for a parsed module, computed once per module (parses are cached by text)."""
    return _facts_cached(parsed)
