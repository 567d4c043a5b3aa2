"""Facts about evaluation code: where autograd is off, which code evaluates a model, which models
behave differently in eval mode. Used by TL103-TL105; pure ast, like the rest of analysis/.

"Evaluation" is recognised the way a reader recognises it, never by one spelling alone: a
function named like evaluate/validate/test, a loop over a validation/test loader, or code after
`model.eval()`. Gradients are "needed" when the code calls `.backward()`, `torch.autograd.grad`
or steps an optimizer (adversarial examples, saliency maps, gradient penalties).
"""

from __future__ import annotations

import ast
import functools
import re

from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.syntax import target_key
from torch_lsp.analysis.training import EventKind, Kind, TrainingFacts

_GRAD_OFF_CONTEXTS = (
    "torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad", "torch.autograd.inference_mode",
    "torch.autograd.grad_mode.no_grad", "torch.autograd.grad_mode.inference_mode",
)
# `with torch.set_grad_enabled(phase == "train"):` decides at run time: the author manages it.
_GRAD_SWITCH_CONTEXTS = ("torch.set_grad_enabled", "torch.autograd.set_grad_enabled",
                         "torch.autograd.grad_mode.set_grad_enabled")
_GRADIENT_APIS = ("torch.autograd.grad", "torch.autograd.backward", "torch.autograd.functional.", "torch.func.",
                  "functorch.")
_EVALUATION_WORDS = {"eval", "evaluate", "evaluation", "validate", "validation", "val", "valid", "test", "testing"}
# Framework hooks that already run under no_grad (PyTorch Lightning's evaluation steps).
_FRAMEWORK_NO_GRAD_HOOKS = {"validation_step", "test_step", "predict_step"}
_VALIDATION_ITERABLE = re.compile(r"(?:^|_)(?:val|valid|validation|test|testing|eval|evaluation|dev)"
                                  r"(?:$|_|loader|set|data|dl|batches)", re.IGNORECASE)
_MODE_DEPENDENT_LAYERS = re.compile(r"^torch\.nn\.(?:modules\.\w+\.)?(?:\w*Dropout\w*|\w*BatchNorm\w*|SyncBatchNorm)$")
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)


class EvaluationFacts:
    def __init__(self, facts: TrainingFacts, path: str = "<buffer>"):
        self.facts = facts
        self.parsed = facts.parsed
        self.path = path
        self._layered_classes: dict[str, bool] = {}
        self._needs_gradients: dict[tuple[int, ...], bool] = {}

    # -- autograd state ---------------------------------------------------------------------
    def grad_controlled(self, node: ast.AST, _depth: int = 0) -> bool:
        """True when autograd is off (or switched on purpose) wherever `node` runs.

        A `with torch.no_grad()` / `inference_mode()` / `set_grad_enabled(...)` around it, a
        decorator of that kind on an enclosing function, or an enclosing function that every
        call site in the file calls from such a context.
        """
        for ancestor in self.parsed.ancestors(node):
            if isinstance(ancestor, (ast.With, ast.AsyncWith)) and any(
                self._is_grad_context(item.context_expr) for item in ancestor.items
            ):
                return True
            if isinstance(ancestor, _FUNCTIONS):
                if any(self._is_grad_context(d, switches=False) for d in ancestor.decorator_list):
                    return True
                if self._is_framework_hook(ancestor):
                    return True
                calls = self.facts.calls_by_name.get(ancestor.name, [])
                if calls and _depth < 3 and all(self.grad_controlled(c, _depth + 1) for c in calls):
                    return True
                return False
        return False

    def _is_grad_context(self, expr: ast.AST, switches: bool = True) -> bool:
        target = expr.func if isinstance(expr, ast.Call) else expr
        names = _GRAD_OFF_CONTEXTS + (_GRAD_SWITCH_CONTEXTS if switches else ())
        return self.parsed.resolves_to(target, *names)

    def _is_framework_hook(self, function: ast.AST) -> bool:
        return function.name in _FRAMEWORK_NO_GRAD_HOOKS and isinstance(self.parsed.parent(function), ast.ClassDef)

    def needs_gradients(self, body: list[ast.stmt], owner: ast.AST) -> bool:
        """True when `body` (with the helpers it calls) computes gradients or steps an optimizer."""
        key = tuple(id(statement) for statement in body)
        if key not in self._needs_gradients:
            self._needs_gradients[key] = self._computes_gradients(body, owner)
        return self._needs_gradients[key]

    def _computes_gradients(self, body: list[ast.stmt], owner: ast.AST) -> bool:
        loop = self.facts.loop_of(body[0]) if body else None
        reuse = loop is not None and loop.node is owner and body is owner.body  # events already known
        for event in loop.events if reuse else self.facts.events_in(body, owner):
            if event.kind in (EventKind.BACKWARD, EventKind.STEP):
                return True
            if event.kind is EventKind.CALL and isinstance(event.node, ast.Call) and self.parsed.resolves_to(
                event.node.func, *_GRADIENT_APIS
            ):
                return True
        return False

    # -- what evaluates ---------------------------------------------------------------------
    def is_evaluation_function(self, function: ast.AST) -> bool:
        """Named like evaluate/validate/test (`evaluate`, `val_epoch`, `testModel`), not a
        pytest test and not a framework hook that already runs without gradients."""
        words = _name_words(function.name)
        if not words & _EVALUATION_WORDS or self._is_framework_hook(function):
            return False
        return not self.is_unit_test(function)

    def is_unit_test(self, function: ast.AST) -> bool:
        """A pytest test: its forward passes check outputs, they are not evaluation."""
        return function.name.startswith("test_") and self._is_pytest_module()

    def _is_pytest_module(self) -> bool:
        name = self.path.replace("\\", "/").rsplit("/", 1)[-1]
        return name.startswith("test_") or name.endswith("_test.py") or "pytest" in self.parsed.imports

    def is_validation_loop(self, loop: ast.AST) -> bool:
        """`for x, y in val_loader`, `for batch in loaders["test"]`, `for b in self.testloader`."""
        if not isinstance(loop, (ast.For, ast.AsyncFor)):
            return False
        for node in ast.walk(loop.iter):
            word = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else (
                node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None)
            if word and _VALIDATION_ITERABLE.search(word):
                return True
        return False

    # -- models -----------------------------------------------------------------------------
    def has_mode_dependent_layers(self, model: ast.AST) -> bool:
        """True when the model (an expression) is known to contain Dropout or BatchNorm layers,
        so that train() and eval() give different results. Unknown models answer False."""
        return any(self._constructor_has_layers(call, set()) for call in self._constructions(model, 0))

    def _constructions(self, expr: ast.AST, depth: int) -> list[ast.Call]:
        if depth > 4:
            return []
        found = self.facts.classify(expr)
        if found is not None and found[0] is Kind.MODEL and found[2] is not None:
            return [found[2]]
        binding = self.facts.bindings.get(target_key(expr) or "")
        if binding is not None and isinstance(binding.value, _FUNCTIONS):  # a helper's parameter
            calls = []
            for source in self.facts.argument_sources(binding.value, binding.key):
                calls.extend(self._constructions(source, depth + 1))
            return calls
        return []

    def _constructor_has_layers(self, call: ast.Call, seen: set[str]) -> bool:
        qualified = self.parsed.qualified_name(call.func) or ""
        if _MODE_DEPENDENT_LAYERS.match(qualified) or qualified.startswith("torchvision.models."):
            return True
        if qualified in self.facts.module_classes:
            return self._class_has_layers(qualified, seen)
        # Containers (nn.Sequential(...), nn.ModuleList([...])): look at what they hold.
        return any(self._constructor_has_layers(inner, seen) for inner in _calls_in_arguments(call))

    @functools.cached_property
    def _classes(self) -> dict[str, ast.ClassDef]:
        return {c.name: c for c in nodes(self.parsed, ast.ClassDef)}

    def _class_has_layers(self, name: str, seen: set[str]) -> bool:
        if name in self._layered_classes:
            return self._layered_classes[name]
        if name in seen:
            return False
        seen.add(name)
        cls = self._classes.get(name)
        found = cls is not None and self._class_body_has_layers(cls, seen)
        self._layered_classes[name] = found
        return found

    def _class_body_has_layers(self, cls: ast.ClassDef, seen: set[str]) -> bool:
        for node in ast.walk(cls):
            if not isinstance(node, ast.Call):
                continue
            qualified = self.parsed.qualified_name(node.func) or ""
            if _MODE_DEPENDENT_LAYERS.match(qualified) or qualified.startswith("torchvision.models."):
                return True
            if qualified in self.facts.module_classes and self._class_has_layers(qualified, seen):
                return True
            # F.dropout follows eval() only when told to (`training=self.training`).
            if qualified == "torch.nn.functional.dropout" and any(k.arg == "training" for k in node.keywords):
                return True
        return any(self._class_has_layers(self.parsed.qualified_name(b) or "", seen) for b in cls.bases)


def _calls_in_arguments(call: ast.Call):
    for arg in [*call.args, *(k.value for k in call.keywords)]:
        for node in ast.walk(arg):
            if isinstance(node, ast.Call):
                yield node


def _name_words(name: str) -> set[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return {w.lower() for w in spaced.split("_") if w}
