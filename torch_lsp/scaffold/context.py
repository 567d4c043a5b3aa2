"""The file's own names and places, as scaffold actions need them.

Which variable is the model, the optimizer, the loss, the training and validation loaders, the
device; which class is the model; where the training loop (over batches) and the epoch loop
are, which statement computes the loss and which one steps the optimizer; where the cursor is.
All of it comes from the cached `ast` facts (analysis.syntax, analysis.training) and is
computed lazily, once per request: `offers` runs on every cursor move.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass

from torch_lsp.analysis.facts import Span
from torch_lsp.analysis.syntax import ParsedModule, target_key
from torch_lsp.analysis.training import Binding, EventKind, Kind, Loop, TrainingFacts, training_facts

_VALIDATION_NAME = re.compile(r"val|valid|test|eval|dev|holdout", re.IGNORECASE)
_VALIDATION_LOSS_NAME = re.compile(r"^(val|valid|validation|test|eval|dev)_?loss$|^loss_(val|valid|test|eval)$", re.I)
_EPOCHS_NAME = re.compile(r"^(n_|num_)?epochs?$|^(EPOCHS|NUM_EPOCHS|N_EPOCHS|MAX_EPOCHS|max_epochs)$", re.IGNORECASE)
_CLASSES_NAME = re.compile(r"^(n_|num_)classes$", re.IGNORECASE)
_LOOP = (ast.For, ast.AsyncFor, ast.While)
_DATASETS = {"torch.utils.data.TensorDataset", "torch.utils.data.dataset.TensorDataset"}
_SCOPE = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


@dataclass(frozen=True)
class TrainingLoop:
    """The loop over batches that steps the optimizer, and the epoch loop around it (if any)."""

    batch: Loop
    epoch: ast.For | ast.AsyncFor | ast.While | None
    step: ast.stmt  # the statement that calls optimizer.step() (or scaler.step(optimizer))
    backward: ast.stmt  # the statement that calls loss.backward()
    loss_name: str | None  # `loss` in `loss.backward()`
    loss_statement: ast.stmt | None  # the last `loss = ...` before backward


class FileIndex:
    """Whole-file lookups built in one pass and cached per parse: `offers` runs on every cursor
    move, so no action may walk the tree to answer "is the cursor on `net`?"."""

    def __init__(self, parsed: ParsedModule):
        self.keys_by_line: dict[int, list[tuple[str, ast.AST]]] = {}  # 0-based line -> (key, node)
        self.stored: dict[str, int] = {}  # name -> first 1-based line that binds it
        self.called: set[str] = set()  # qualified callee names, and ".method" for method calls
        self.assigns: list[ast.Assign] = []
        self.calls: list[ast.Call] = []
        self.per_file: dict[str, object] = {}  # values of ScaffoldContext's @per_file properties
        for node in ast.walk(parsed.tree):
            if isinstance(node, (ast.Name, ast.Attribute)):
                key = target_key(node)
                if key is not None:
                    for line in range(node.lineno - 1, (node.end_lineno or node.lineno)):
                        self.keys_by_line.setdefault(line, []).append((key, node))
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    self._store(node.id, node.lineno)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self._store(node.name, node.lineno)
            elif isinstance(node, ast.Assign):
                self.assigns.append(node)
            elif isinstance(node, ast.Call):
                self.calls.append(node)
                qualified = parsed.qualified_name(node.func)
                if qualified:
                    self.called.add(qualified)
                if isinstance(node.func, ast.Attribute):
                    self.called.add("." + node.func.attr)
        self.assigns.sort(key=lambda n: (n.lineno, n.col_offset))
        self.calls.sort(key=lambda n: (n.lineno, n.col_offset))

    def _store(self, name: str, line: int) -> None:
        self.stored[name] = min(line, self.stored.get(name, line))


@functools.lru_cache(maxsize=16)
def file_index(parsed: ParsedModule) -> FileIndex:
    return FileIndex(parsed)


def per_file(method):
    """A property of the file alone, not of the cursor (which variable is the optimizer, where
    the training loop is): computed once per parse and shared by every request on that text."""
    name = method.__name__

    @functools.wraps(method)
    def getter(self: "ScaffoldContext"):
        cache = self.index.per_file
        if name not in cache:
            cache[name] = method(self)
        return cache[name]

    return property(getter)


class ScaffoldContext:
    def __init__(self, parsed: ParsedModule, span: Span, path: str = "<buffer>", import_limit: int | None = None):
        self.parsed = parsed
        self.source = parsed.source
        self.span = span
        self.path = path
        # New imports go above this 0-based line: a notebook keeps its imports in its first cell.
        self.import_limit = import_limit

    @functools.cached_property
    def facts(self) -> TrainingFacts:
        return training_facts(self.parsed)

    # -- cursor -------------------------------------------------------------------------------
    def cursor_in(self, node: ast.AST | None) -> bool:
        """The cursor (or selection) touches `node`'s source range."""
        return node is not None and self.parsed.span(node).overlaps(self.span)

    @functools.cached_property
    def cursor_class(self) -> ast.ClassDef | None:
        """The nn.Module class the cursor is in (header, body, or a decorator)."""
        for node in self.parsed.tree.body:
            if isinstance(node, ast.ClassDef) and node.name in self.facts.module_classes and self.cursor_in(node):
                return node
        return None

    @functools.cached_property
    def index(self) -> FileIndex:
        return file_index(self.parsed)

    def cursor_on_key(self, key: str | None) -> bool:
        """The cursor is on a use or an assignment of variable `key` (e.g. `net`, `optimizer`)."""
        if key is None:
            return False
        for line in range(self.span.start.line, self.span.end.line + 1):
            for found, node in self.index.keys_by_line.get(line, ()):
                if found == key and self.cursor_in(node):
                    return True
        statement = self.binding_statement(self.facts.bindings.get(key))
        return statement is not None and self.cursor_in(statement)

    @functools.cached_property
    def cursor_in_training_loop(self) -> bool:
        loop = self.training_loop
        return loop is not None and (self.cursor_in(loop.epoch) or self.cursor_in(loop.batch.node))

    # -- names --------------------------------------------------------------------------------
    def bindings_of(self, kind: Kind) -> list[Binding]:
        """Variables (not `self.` attributes of a class) bound to a `kind`, in source order."""
        found = [b for b in self.facts.bindings.values()
                 if b.kind is kind and not b.key.startswith("self.") and isinstance(b.value, ast.expr)]
        return sorted(found, key=lambda b: (b.value.lineno, b.value.col_offset))

    @per_file
    def optimizer(self) -> Binding | None:
        loop = self.training_loop
        stepped = [e.target for e in loop.batch.of(EventKind.STEP)] if loop else []
        return self._prefer(self.bindings_of(Kind.OPTIMIZER), stepped)

    @functools.cached_property
    def model(self) -> Binding | None:
        """The model instance: the optimizer's model, the one under the cursor, or the last one."""
        models = [b for b in self.bindings_of(Kind.MODEL) if not self._is_layer_of_another_model(b)]
        preferred = [self.optimizer.model_key] if self.optimizer and self.optimizer.model_key else []
        preferred += [b.key for b in models if self.cursor_on_key(b.key)]
        return self._prefer(models, preferred)

    @functools.cached_property
    def model_class(self) -> ast.ClassDef | None:
        """The model's class defined in this file (the cursor's class first)."""
        if self.cursor_class is not None:
            return self.cursor_class
        if self.model is not None:
            name = self.model.constructor.rsplit(".", 1)[-1]
            for node in self.parsed.tree.body:
                if isinstance(node, ast.ClassDef) and node.name == name:
                    return node
        return None

    @per_file
    def loss(self) -> Binding | None:
        loop = self.training_loop
        used = [target_key(c.func) for c in self.parsed.walk(loop.batch.node, ast.Call)] if loop else []
        return self._prefer(self.bindings_of(Kind.LOSS), used)

    @per_file
    def scheduler(self) -> Binding | None:
        return self._prefer(self.bindings_of(Kind.SCHEDULER), [])

    @per_file
    def train_loader(self) -> Binding | None:
        loaders = self.bindings_of(Kind.LOADER)
        iterated = [self._iterated_key(self.training_loop.batch.node)] if self.training_loop else []
        train = [b for b in loaders if not _VALIDATION_NAME.search(b.key)]
        return self._prefer(train or loaders, iterated)

    @per_file
    def train_dataset(self) -> str | None:
        """A module-level dataset variable (torchvision dataset, TensorDataset, a Dataset class of
        this file), preferring one whose name does not say validation."""
        found = []
        for node in self.index.assigns:
            if self.parsed.parent(node) is not self.parsed.tree or len(node.targets) != 1 \
                    or not isinstance(node.targets[0], ast.Name) or not isinstance(node.value, ast.Call):
                continue
            qualified = self.parsed.qualified_name(node.value.func) or ""
            if qualified.startswith("torchvision.datasets.") or qualified in _DATASETS or qualified in self.dataset_classes:
                found.append(node.targets[0].id)
        train = [name for name in found if not _VALIDATION_NAME.search(name)]
        return (train or [None])[0]

    @per_file
    def dataset_classes(self) -> set[str]:
        """Classes of this file that subclass torch.utils.data.Dataset."""
        return {c.name for c in self.parsed.tree.body if isinstance(c, ast.ClassDef)
                and any(self.parsed.resolves_to(b, "torch.utils.data.Dataset", "torch.utils.data.dataset.Dataset")
                        for b in c.bases)}

    @per_file
    def training_batches(self) -> str | None:
        """What the training loop iterates over: the training loader, or the variable it loops on."""
        if self.train_loader is not None:
            return self.train_loader.key
        return self._iterated_key(self.training_loop.batch.node) if self.training_loop else None

    @per_file
    def val_loader(self) -> Binding | None:
        loaders = [b for b in self.bindings_of(Kind.LOADER) if _VALIDATION_NAME.search(b.key)]
        return loaders[0] if loaders else None

    @per_file
    def device(self) -> str | None:
        """A variable holding a torch.device (or named `device`), bound at module level."""
        for node in self.index.assigns:
            if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                continue
            name = node.targets[0].id
            builds_device = any(isinstance(c, ast.Call) and self.parsed.resolves_to(c.func, "torch.device")
                                for c in ast.walk(node.value))
            if builds_device or name == "device":
                return name
        return None

    @functools.cached_property
    def num_classes(self) -> str | None:
        """Source text for the number of classes: a variable, a dataset's num_classes=, or the
        out_features of the model's last Linear layer."""
        for node in self.index.assigns:
            if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and _CLASSES_NAME.match(node.targets[0].id):
                return node.targets[0].id
        for call in self.index.calls:
            for keyword in call.keywords:
                if keyword.arg == "num_classes" and isinstance(keyword.value, ast.Constant):
                    return repr(keyword.value.value)
        last = None
        for call in self.parsed.walk(self.model_class, ast.Call) if self.model_class else ():
            if self.parsed.resolves_to(call.func, "torch.nn.Linear") and len(call.args) >= 2:
                last = call.args[1]
        return self.parsed.code(last) if last is not None else None

    # -- loops --------------------------------------------------------------------------------
    @per_file
    def training_loop(self) -> TrainingLoop | None:
        """The first loop that calls backward() and steps an optimizer itself (not via a helper
        loop of its own), with the epoch loop around it."""
        for loop in self.facts.loops:
            steps = [e for e in loop.of(EventKind.STEP) if not e.via]
            backwards = [e for e in loop.of(EventKind.BACKWARD) if not e.via]
            if not steps or not backwards or any(_steps_directly(inner) for inner in loop.inner):
                continue
            step, backward = self._statement(steps[0].node), self._statement(backwards[0].node)
            loss_name = backwards[0].target or _scaled_loss(backwards[0].node)
            return TrainingLoop(loop, self._epoch_loop(loop), step, backward, loss_name,
                                self._last_assignment(loop.node, loss_name, before=backward))
        return None

    def _epoch_loop(self, batch: Loop) -> ast.stmt | None:
        outer = self.parsed.enclosing(batch.node, (*_LOOP, *_SCOPE))
        if isinstance(outer, _LOOP):
            return outer
        if isinstance(outer, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # train_one_epoch(...) called from an epoch loop elsewhere.
            for loop in self.facts.loops:
                if any(outer.name in e.via for e in loop.events) and not self.parsed.enclosing(loop.node, _SCOPE) is outer:
                    return loop.node
        return None

    @per_file
    def epochs(self) -> ast.expr | None:
        """The epoch count: `N` in `for epoch in range(N)`, or a variable named like `num_epochs`."""
        loop = self.training_loop.epoch if self.training_loop else None
        if isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call) and isinstance(loop.iter.func, ast.Name) \
                and loop.iter.func.id == "range" and len(loop.iter.args) == 1:
            return loop.iter.args[0]
        for node in self.parsed.tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and _EPOCHS_NAME.match(node.targets[0].id):
                return node.targets[0]
        return None

    @per_file
    def epoch_variable(self) -> str | None:
        loop = self.training_loop.epoch if self.training_loop else None
        if isinstance(loop, ast.For) and isinstance(loop.target, ast.Name):
            return loop.target.id
        return None

    @per_file
    def validation_loss(self) -> tuple[str, ast.stmt] | None:
        """(name, statement) of a validation loss computed in the epoch loop, if there is one."""
        loop = self.training_loop
        if loop is None or loop.epoch is None:
            return None
        for node in self.parsed.walk(loop.epoch, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            for name in names:
                if _VALIDATION_LOSS_NAME.match(name.id):
                    return name.id, self.statement_in_body(loop.epoch, node)
        return None

    # -- what the file already does -----------------------------------------------------------
    @property
    def called(self) -> set[str]:
        """Qualified names and bare method names (`.eval`) of every call in the file."""
        return self.index.called

    def calls(self, *names: str) -> bool:
        """The file calls one of `names` (qualified like `torch.no_grad`, or `.eval` for methods)."""
        return any(n in self.index.called for n in names)

    def defines(self, name: str) -> bool:
        """`name` is bound somewhere in the file (assigned, a def, a class, a loop variable)."""
        return name in self.index.stored

    def first_binding_line(self, name: str) -> int | None:
        return self.index.stored.get(name)

    def constructor_call(self, binding: Binding | None) -> ast.Call | None:
        """The call that built `binding` (`optim.SGD(...)`), even through `.to(...)` or a helper."""
        found = self.facts.classify(binding.value) if binding is not None else None
        return found[2] if found else None

    # -- statements ---------------------------------------------------------------------------
    def binding_statement(self, binding: Binding | None) -> ast.stmt | None:
        if binding is None or not isinstance(binding.value, ast.expr):
            return None
        return self._statement(binding.value)

    def _statement(self, node: ast.AST) -> ast.stmt:
        return node if isinstance(node, ast.stmt) else self.parsed.enclosing(node, ast.stmt)

    def statement_in_body(self, compound: ast.stmt, node: ast.AST) -> ast.stmt:
        """The statement directly in `compound`'s body that contains `node`."""
        current = self._statement(node)
        while current is not None and self.parsed.parent(current) is not compound:
            current = self.parsed.enclosing(current, ast.stmt)
        return current

    def _last_assignment(self, scope: ast.AST, name: str | None, before: ast.stmt) -> ast.stmt | None:
        found = None
        for node in self.parsed.walk(scope, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(target_key(t) == name for t in targets) and node.lineno <= before.lineno:
                found = node
        return found

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _prefer(bindings: list[Binding], keys: list[str | None]) -> Binding | None:
        for key in keys:
            for binding in bindings:
                if binding.key == key:
                    return binding
        return bindings[-1] if bindings else None

    def _is_layer_of_another_model(self, binding: Binding) -> bool:
        """`backbone = resnet18()` used inside `Net(...)`'s call is a part, not the model."""
        return isinstance(binding.value, ast.Call) and binding.constructor.startswith("torch.nn.") and any(
            b.key != binding.key and any(isinstance(n, ast.Name) and n.id == binding.key for n in ast.walk(b.value))
            for b in self.facts.bindings.values() if b.kind is Kind.MODEL and isinstance(b.value, ast.expr))

    @staticmethod
    def _iterated_key(loop: ast.stmt) -> str | None:
        if not isinstance(loop, (ast.For, ast.AsyncFor)):
            return None
        iterable = loop.iter
        # enumerate(loader), tqdm(loader), zip(loader, ...): the first argument.
        while isinstance(iterable, ast.Call) and iterable.args:
            iterable = iterable.args[0]
        return target_key(iterable)


def _scaled_loss(backward: ast.AST) -> str | None:
    """`loss` in `scaler.scale(loss).backward()`."""
    receiver = backward.func.value if isinstance(backward, ast.Call) and isinstance(backward.func, ast.Attribute) else None
    if isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute) and receiver.func.attr == "scale" \
            and receiver.args:
        return target_key(receiver.args[0])
    return None


def _steps_directly(loop: Loop) -> bool:
    return any(not e.via for e in loop.of(EventKind.STEP)) and any(not e.via for e in loop.of(EventKind.BACKWARD))
