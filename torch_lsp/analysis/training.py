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
from torch_lsp.analysis.syntax import ParsedModule, derived, target_key


class Kind(str, enum.Enum):
    MODEL = "model"
    OPTIMIZER = "optimizer"
    SCHEDULER = "scheduler"
    LOSS = "loss"
    LOADER = "loader"
    SCALER = "scaler"


_STATIC = object()  # a classification that does not depend on bindings (see TrainingFacts._resolution)
_NOTHING = (None, _STATIC)
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
class _Contribution:
    """What one top-level statement adds to the file's tables (kept across edits)."""

    functions: list[ast.FunctionDef | ast.AsyncFunctionDef]
    calls: list[ast.Call]  # calls of a plain name: `train(...)`
    assignments: list[tuple[str, ast.AST]]  # single-target assignments: (target key, value)


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
    def __init__(self, parsed: ParsedModule, previous: "TrainingFacts | None" = None, stale: set[int] = frozenset()):
        """Facts of `parsed`. With `previous` (the facts of the version before an edit, whose
        unchanged nodes `parsed` shares; analysis/incremental.py), what was worked out for
        nodes outside `stale` (ids of the nodes an edit can affect) is kept."""
        self.parsed = parsed
        self._resolutions: dict[int, tuple] = {}
        self._statement_cache: dict[int, dict[tuple[str, ...], list[Event]]] = {}
        self._helper_events: dict[int, dict[tuple[str, ...], list[Event]]] = {}
        self._returns: dict[int, ast.AST | None] = {}
        self._contributions: dict[int, _Contribution] = {}  # per top-level statement
        self._memos: dict[int, dict[str, object]] = {}  # see memo()
        reusable: dict[ast.AST, Loop] = {}
        if previous is not None:  # the previous facts are not used again: take their caches over
            self._resolutions, self._statement_cache = previous._resolutions, previous._statement_cache
            self._helper_events, self._returns = previous._helper_events, previous._returns
            self._contributions, self._memos = previous._contributions, previous._memos
            for cache in (self._resolutions, self._statement_cache, self._helper_events, self._returns,
                          self._contributions, self._memos):
                for key in stale & cache.keys():
                    del cache[key]
            reusable = {loop.node: loop for loop in previous.loops if id(loop.node) not in stale}
        contributions = [self._contribution(statement) for statement in parsed.tree.body]
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.calls_by_name: dict[str, list[ast.Call]] = {}
        for contribution in contributions:
            for function in contribution.functions:
                self.functions.setdefault(function.name, function)
            for call in contribution.calls:
                self.calls_by_name.setdefault(call.func.id, []).append(call)
        self.module_classes = self._module_classes()
        self.bindings: dict[str, Binding] = {}
        self._collect_bindings([a for contribution in contributions for a in contribution.assignments])
        self.loops = self._collect_loops(reusable)

    def memo(self, node: ast.AST, name: str, compute):
        """`compute()`, remembered for `node` under `name`; kept across an edit that does not
        affect `node` (analysis/incremental.py). For what a rule works out per loop or per
        function from that node and what names lead to (never from file-wide aggregates)."""
        memos = self._memos.setdefault(id(node), {})
        if name not in memos:
            memos[name] = compute()
        return memos[name]

    def _contribution(self, statement: ast.stmt) -> "_Contribution":
        found = self._contributions.get(id(statement))
        if found is None:
            functions, calls, assignments = [], [], []
            for node in nodes(self.parsed, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Call, ast.Assign, ast.AnnAssign),
                              statement):
                if isinstance(node, ast.Call):
                    if isinstance(node.func, ast.Name):
                        calls.append(node)
                elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if node.value is not None and len(targets) == 1:
                        key = target_key(targets[0])
                        if key:
                            assignments.append((key, node.value))
                else:
                    functions.append(node)
            found = self._contributions[id(statement)] = _Contribution(functions, calls, assignments)
        return found

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

    def classify(self, expr: ast.AST) -> tuple[Kind, str, ast.Call | None] | None:
        """(kind, constructor, constructor call) of the value `expr` evaluates to, if known."""
        found, key = self._resolution(expr)
        if key is _STATIC:
            return found
        binding = self.bindings.get(key) if key is not None else None
        if binding is None:
            return None
        return binding.kind, binding.constructor, binding.value if isinstance(binding.value, ast.Call) else None

    def _resolution(self, expr: ast.AST, depth: int = 0) -> tuple[tuple[Kind, str, ast.Call | None] | None, object]:
        """What classifying `expr` comes down to: (answer, _STATIC) when the expression alone
        decides, or (None, key) when it is whatever `key` is bound to when asked. Bindings
        change while they are collected; this split does not, so it is computed once per node."""
        cache = self._resolutions
        cached = cache.get(id(expr)) if depth == 0 else None
        if cached is not None:
            return cached
        if depth > 8:
            resolved = (None, _STATIC)
        elif isinstance(expr, (ast.Name, ast.Attribute)):
            resolved = (None, target_key(expr))
        elif not isinstance(expr, ast.Call):
            resolved = (None, _STATIC)
        else:
            resolved = self._call_resolution(expr, depth)
        if depth == 0 and id(expr) in self.parsed.index.start:  # not a synthetic node whose id may be reused
            cache[id(expr)] = resolved
        return resolved

    def _call_resolution(self, expr: ast.Call, depth: int):
        func = expr.func
        if isinstance(func, ast.Attribute) and func.attr in _PASS_THROUGH_METHODS:
            return self._resolution(func.value, depth + 1)
        qualified = self.parsed.qualified_name(func) or ""
        if qualified in _PASS_THROUGH_WRAPPERS and expr.args:
            return self._resolution(expr.args[0], depth + 1)
        kind = _kind_of_constructor(qualified, self.module_classes)
        if kind is not None:
            return (kind, qualified, expr), _STATIC
        if isinstance(func, ast.Name) and func.id in self.functions:
            returned = self._returned(self.functions[func.id])
            if returned is not None:
                return self._resolution(returned, depth + 1)
        return None, _STATIC

    def _returned(self, function: ast.AST) -> ast.AST | None:
        """The last `return <value>` of a helper, looked up once per helper."""
        cache = self._returns
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
    def _collect_bindings(self, assignments: list[tuple[str, ast.AST]]) -> None:
        # Two passes so that `opt = optimizer` after `optimizer = SGD(...)` and parameter typing
        # from call sites both see the first pass's results. Values that classify as nothing
        # whatever the bindings (most of them) are left out of both.
        assignments = [(key, value) for key, value in assignments if self._resolution(value) != _NOTHING]
        for _ in range(2):
            for key, value in assignments:
                found = self.classify(value)
                if found:
                    self._bind(key, found, value)
            self._bind_parameters()

    def _bind(self, key: str, found: tuple[Kind, str, ast.Call | None], value: ast.AST) -> None:
        kind, constructor, call = found
        known = self.bindings.get(key)
        if known is not None and known.value is value and known.kind is kind and known.constructor == constructor:
            return  # the second pass finds most bindings as the first left them
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
    def _collect_loops(self, reusable: dict[ast.AST, Loop]) -> list[Loop]:
        loops: dict[ast.AST, Loop] = {}
        for node in nodes(self.parsed, (ast.For, ast.AsyncFor, ast.While)):
            known = reusable.get(node)
            if known is not None:  # an unchanged loop of the previous version, with its inner ones
                loops[node] = known
                continue
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
            if not contains(self.parsed, statement):  # a synthetic statement (lambda closures)
                for node, guarded in _walk_executed_guarded(statement):
                    if isinstance(node, (ast.Assign, ast.Call)):
                        events.extend(self._events_of(node, anchor or node, outer or guarded, via, stop))
                continue
            own = self._statement_events(statement, via)
            if anchor is None and not outer:
                events.extend(own)
            else:
                events.extend(Event(e.kind, e.node, anchor or e.anchor, e.target, outer or e.conditional, e.via)
                              for e in own)
        return events

    def _statement_events(self, statement: ast.stmt, via: tuple[str, ...]) -> list[Event]:
        """The events of one statement as if it were a loop body of its own: anchored at their
        own nodes, conditional only under a guard inside the statement. Computed once per
        statement (and `via`): nested loops, evaluation code and helpers share them."""
        by_via = self._statement_cache.get(id(statement))
        if by_via is None:
            by_via = self._statement_cache[id(statement)] = {}
        events = by_via.get(via)
        if events is None:
            events = by_via[via] = [] if isinstance(statement, _SCOPES) else \
                self._compute_statement_events(statement, via)
        return events

    def _compute_statement_events(self, statement: ast.stmt, via: tuple[str, ...]) -> list[Event]:
        # The node index lists the statement's assignments, calls and inner statements in
        # pre-order; an inner statement contributes its own cached events and is skipped over.
        events: list[Event] = []
        index = self.parsed.index
        skip_until = -1
        for node in nodes(self.parsed, _STATEMENT_PARTS, statement):
            if node is statement:
                if isinstance(node, ast.Assign):
                    events.extend(self._events_of(node, node, False, via, statement))
                continue
            number = index.start[id(node)]
            if number <= skip_until:
                continue
            guarded, executed = self._guard_between(node, statement)
            if isinstance(node, ast.stmt):
                skip_until = index.end[id(node)]
                inner = self._statement_events(node, via)
                events.extend(inner if not guarded else
                              [Event(e.kind, e.node, e.anchor, e.target, True, e.via) for e in inner])
            elif executed:
                events.extend(self._events_of(node, node, guarded, via, statement))
        return events

    def _guard_between(self, node: ast.AST, statement: ast.stmt) -> tuple[bool, bool]:
        """(under an if/else, except handler or comprehension up to `statement`, runs at all:
        not inside a lambda)."""
        guarded = isinstance(statement, _GUARDS)
        parents = self.parsed.index.parents
        current = parents.get(node)
        while current is not None and current is not statement:
            if isinstance(current, _SCOPES):
                return guarded, False
            if isinstance(current, _GUARDS):
                guarded = True
            current = parents.get(current)
        return guarded, True

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
                events.extend(self._inlined(helper, via + (helper.name,), anchor, conditional))
        return events

    def _inlined(self, helper: ast.FunctionDef | ast.AsyncFunctionDef, via: tuple[str, ...], anchor: ast.AST,
                 conditional: bool) -> list[Event]:
        """`events_in(helper.body, ...)` seen from one call site. A helper called from many
        loops is walked once per `via`; each call site only re-anchors the events."""
        by_via = self._helper_events.setdefault(id(helper), {})
        events = by_via.get(via)
        if events is None:
            events = by_via[via] = self.events_in(helper.body, helper, via)
        return [Event(e.kind, e.node, anchor, e.target, conditional or e.conditional, e.via) for e in events]

    def _closure_events(self, call: ast.Call, anchor, conditional, via, stop) -> list[Event]:
        """`optimizer.step(closure)` runs the closure first (LBFGS and friends)."""
        closure = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "closure"), None)
        if isinstance(closure, ast.Name) and closure.id in self.functions:
            helper = self.functions[closure.id]
            return self._inlined(helper, via + (helper.name,), anchor, conditional)
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
_STATEMENT_PARTS = (ast.stmt, ast.Call)  # Assign is a statement
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


def training_facts(parsed: ParsedModule) -> TrainingFacts:
    """Facts for a parsed module, computed once per module (parses are cached by text). A
    focused module (analysis/incremental.py) answers with its whole module's facts: which
    names hold models and optimizers is a property of the file."""
    return derived(parsed, "training", TrainingFacts)
