"""Evaluation code: autograd left on (TL104) and train/eval mode mistakes (TL105)."""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass

from torch_lsp.analysis.evaluation_facts import EvaluationFacts
from torch_lsp.analysis.facts import Fix, Severity
from torch_lsp.analysis.rules import REGISTRY, RuleContext, rule
from torch_lsp.analysis.rules._blocks import (block_of, first_statement_after_docstring, fix_of, insert_after, insert_before,
                                              statement_in, statement_of, torch_name, wrap_statement)
from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.syntax import target_key
from torch_lsp.analysis.training import EventKind, Loop, TrainingFacts, training_facts

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_MODES = (EventKind.MODE_EVAL, EventKind.MODE_TRAIN, EventKind.MODE_SET)
# Layers without weights: calling one on outputs is post-processing, not a forward pass.
_PARAMETER_FREE = re.compile(r"^torch\.nn\.(?:\w*Softmax\w*|Sigmoid|Tanh|\w*ReLU\d*|GELU|SiLU|ELU|Mish|Hard\w+|"
                             r"\w*Dropout\w*|Flatten|Unflatten|Identity|Upsample\w*|\w*Pool\w*|PixelShuffle)$")


@dataclass(frozen=True)
class EvaluationSite:
    """A forward pass in evaluation code, and why it counts as evaluation."""

    forward: ast.Call
    model: str  # the model as the code names it: `model`, `self.net`
    context: str  # words for the message
    scope: ast.AST  # the validation loop, the evaluation function, or the `model.eval()` statement
    wrap: ast.stmt  # what `torch.no_grad()` should cover
    after_switch: bool = False  # found through a preceding `model.eval()`


@functools.lru_cache(maxsize=4)
def _analysis(parsed, path: str) -> "_Analysis":
    return _Analysis(parsed, path)


class _Analysis:
    """Per-file state shared by TL104 and TL105 (events of statements are cached)."""

    def __init__(self, parsed, path: str):
        self.parsed = parsed
        self.facts: TrainingFacts = training_facts(parsed)
        self.evaluation = EvaluationFacts(self.facts, path)
        self._events: dict[int, list] = {}

    def events_of(self, statement: ast.stmt):
        """Events of one statement (kinds and targets; `conditional` is not meaningful here)."""
        if id(statement) not in self._events:
            loop = self.facts.loop_of(statement.body[0]) if isinstance(statement, _LOOPS) else None
            if loop is not None and loop.node is statement:  # computed with the training facts
                self._events[id(statement)] = loop.events
            else:
                self._events[id(statement)] = self.facts.events_in([statement], self.parsed.parent(statement) or statement)
        return self._events[id(statement)]

    def forward_calls(self):
        for call in nodes(self.parsed, ast.Call):
            if self.facts.model_call_kind(call) is not EventKind.FORWARD:
                continue
            cls = self.parsed.enclosing(call, ast.ClassDef)
            if cls is not None and cls.name in self.facts.module_classes:
                continue  # a module's own forward() calling its layers
            found = self.facts.classify(call.func)
            if found is not None and _PARAMETER_FREE.match(found[1]):
                continue  # `softmax(outputs)`: no weights, nothing to evaluate
            if isinstance(self.parsed.parent(call), ast.Expr):
                continue  # output thrown away: calibration, warm-up, hooks; nothing is kept
            yield call

    def mode_before(self, node: ast.AST, model: str | None) -> tuple[EventKind, ast.stmt] | None:
        """The last train/eval switch of `model` (any model if None) that runs before `node`
        in its function, and the statement that makes it."""
        wanted = self.facts.canonical(model) if model else None
        current = statement_of(self.parsed, node)
        while current is not None and not isinstance(current, (*_FUNCTIONS, ast.ClassDef)):
            block = block_of(self.parsed, current)
            if block is None:
                break
            for sibling in reversed(block[: [id(s) for s in block].index(id(current))]):
                modes = [e for e in self.events_of(sibling) if e.kind in _MODES
                         and (wanted is None or self.facts.target_of(e) == wanted)]
                if modes:
                    return modes[-1].kind, sibling
            current = self.parsed.parent(current)
        return None

    @functools.cached_property
    def sites(self) -> list[EvaluationSite]:
        found = []
        for call in self.forward_calls():
            site = self._site(call)
            if site is not None:
                found.append(site)
        return found

    def _site(self, call: ast.Call) -> EvaluationSite | None:
        parsed, evaluation = self.parsed, self.evaluation
        model = target_key(call.func) or parsed.code(call.func)
        function = parsed.enclosing(call, _FUNCTIONS)
        if function is not None and (_returns_output(parsed, function, call) or evaluation.is_unit_test(function)):
            return None
        loops = [a for a in parsed.ancestors(call) if isinstance(a, _LOOPS)
                 and (function is None or function in parsed.ancestors(a))]
        validation = [loop for loop in loops if evaluation.is_validation_loop(loop)]
        if validation and not evaluation.needs_gradients(validation[-1].body, validation[-1]):
            loop = validation[-1]
            return EvaluationSite(call, model, "a validation loop", loop, loop)
        if function is not None and evaluation.is_evaluation_function(function) and not evaluation.needs_gradients(
            function.body, function
        ):
            return EvaluationSite(call, model, f"evaluation function `{function.name}`", function,
                                  self._outermost_plain_loop(loops) or statement_of(parsed, call))
        switch = self.mode_before(call, model)
        if switch is not None and switch[0] is EventKind.MODE_EVAL:
            block = block_of(parsed, switch[1])
            start = [id(s) for s in block].index(id(switch[1])) + 1
            holder = statement_in(parsed, call, block)
            region = block[start: [id(s) for s in block].index(id(holder)) + 1]
            if not evaluation.needs_gradients(region, parsed.parent(holder) or holder):
                below = [loop for loop in loops if holder is loop or holder in parsed.ancestors(loop)]
                return EvaluationSite(call, model, f"code after `{parsed.code(self._switch_call(switch[1]))}`",
                                      switch[1], self._outermost_plain_loop(below) or statement_of(parsed, call),
                                      after_switch=True)
        return None

    def _outermost_plain_loop(self, loops: list[ast.AST]) -> ast.stmt | None:
        plain = [loop for loop in loops if not self.evaluation.needs_gradients(loop.body, loop)]
        return plain[-1] if plain else None

    def _switch_call(self, statement: ast.stmt) -> ast.AST:
        modes = [e for e in self.events_of(statement) if e.kind in _MODES]
        return modes[-1].node if modes else statement


def _returns_output(parsed, function: ast.AST, call: ast.Call) -> bool:
    """`return model(x)` / `out = model(x); return out`: a prediction helper; the caller decides."""
    parent = parsed.parent(call)
    if isinstance(parent, ast.Return):
        return True
    names = {t.id for t in getattr(parent, "targets", []) if isinstance(t, ast.Name)}
    for ret in nodes(parsed, ast.Return, function):
        values = ret.value.elts if isinstance(ret.value, ast.Tuple) else [ret.value]
        if any(isinstance(v, ast.Name) and v.id in names for v in values):
            return True
    return False


@rule("TL104", "evaluation-without-no-grad", Severity.WARNING,
      "Evaluation forward passes run with autograd on: wrap them in torch.no_grad().", fixable=True,
      scope="statement")
def evaluation_without_no_grad(ctx: RuleContext):
    """
    ## What it does
    Finds forward passes in evaluation code that run with autograd enabled. Evaluation code is
    a loop over a validation/test loader, a function named like `evaluate`, `validate` or
    `test`, or the code after `model.eval()`, when it computes no gradients.

    ## Why is this bad?
    With autograd on, every forward pass records its graph and keeps the activations for a
    backward pass that never comes: evaluation uses several times the memory it needs
    (out-of-memory errors on the validation set with a batch size that trains fine) and runs
    slower.

    Not reported: code under `with torch.no_grad()`, `torch.inference_mode()` or
    `torch.set_grad_enabled(...)`, functions decorated with `@torch.no_grad()` /
    `@torch.inference_mode()` or only called from such code, Lightning's `validation_step` /
    `test_step`, evaluation that needs gradients (a `.backward()`, `torch.autograd.grad` or
    an optimizer step in the block: adversarial examples, saliency maps, gradient penalties),
    helpers that return the model's output to their caller, forward passes whose output is
    thrown away (calibration, warm-up), weight-free layers applied to outputs (`softmax`), and
    pytest tests.

    ## Example
    ```python
    model.eval()
    for inputs, labels in val_loader:
        outputs = model(inputs)
        correct += (outputs.argmax(1) == labels).sum().item()
    ```

    ## Use instead
    ```python
    model.eval()
    with torch.no_grad():
        for inputs, labels in val_loader:
            outputs = model(inputs)
            correct += (outputs.argmax(1) == labels).sum().item()
    ```

    ## Fix
    Wraps the evaluation loop (or the statement with the forward pass) in
    `with torch.no_grad():`, importing torch if the file does not.

    Suppress with `# torch-lsp: ignore[TL104]` on the forward pass's line, or decorate the
    function with `@torch.no_grad()`.
    """
    this = REGISTRY["TL104"]
    analysis = _analysis(ctx.parsed, ctx.path)
    wrapped: set[int] = set()
    for site in analysis.sites:
        if id(site.wrap) in wrapped or analysis.evaluation.grad_controlled(site.forward):
            continue
        wrapped.add(id(site.wrap))
        torch, imports = torch_name(ctx.parsed)
        fix = wrap_statement(ctx.parsed, site.wrap, f"with {torch}.no_grad():", "Wrap the evaluation in "
                             f"`with {torch}.no_grad():`", imports)
        message = (f"forward pass of `{site.model}` in {site.context} runs with autograd on: the graph and "
                   f"activations are kept for a backward pass that never comes; wrap it in `torch.no_grad()`")
        yield this.finding(ctx.parsed.span(site.forward), message, fix)


@rule("TL105", "train-eval-mode", Severity.WARNING,
      "A model trains in eval mode, or is evaluated in training mode.", fixable=True,
      scope="statement")
def train_eval_mode(ctx: RuleContext):
    """
    ## What it does
    Finds two mistakes with a model's train/eval mode:

    * `model.eval()` in a training loop with no `model.train()` before the next training step
      (typically: validation at the end of each epoch switches the model to eval mode, and
      every epoch after the first trains in it);
    * evaluation (a validation loop, or a function named like `evaluate`/`validate`/`test`)
      of a model that has Dropout or BatchNorm layers, with no `model.eval()` before it, in
      the function or before its calls.

    ## Why is this bad?
    Dropout and BatchNorm behave differently in the two modes. Training in eval mode disables
    dropout and freezes BatchNorm statistics; evaluating in train mode drops random units and
    updates the running statistics with validation data. Either way the numbers are wrong and
    nothing raises.

    Not reported: `model.train()` at the top of a per-epoch function called from the loop,
    `model.train(flag)` switching on a phase, a model re-created in the loop, a frozen model
    (e.g. a distillation teacher) that no optimizer of the loop updates, and models without
    Dropout/BatchNorm for the second case.

    ## Example
    ```python
    for epoch in range(epochs):
        for inputs, labels in train_loader:
            ...
        model.eval()
        validate(model, val_loader)
    ```

    ## Use instead
    ```python
    for epoch in range(epochs):
        model.train()
        for inputs, labels in train_loader:
            ...
        model.eval()
        validate(model, val_loader)
    ```

    ## Fix
    Inserts `model.train()` before the training step that follows `model.eval()`, or
    `model.eval()` before the evaluation (and `model.train()` after a validation loop inside a
    training loop).

    Suppress with `# torch-lsp: ignore[TL105]` on the reported line.
    """
    this = REGISTRY["TL105"]
    analysis = _analysis(ctx.parsed, ctx.path)
    for loop, event, step in _eval_before_training(analysis, ctx.loops):
        model = analysis.facts.target_of(event, aliases=False)  # the name the loop itself uses
        fix = None
        target = statement_in(ctx.parsed, step.anchor, loop.node.body)
        if target is not None and statement_in(ctx.parsed, event.anchor, loop.node.body) is not target:
            fix = fix_of(f"Insert `{model}.train()` before the training step",
                         insert_before(ctx.parsed, target, f"{model}.train()"))
        message = (f"`{ctx.parsed.code(event.node)}` is not undone: the next training step runs in eval mode "
                   f"(dropout off, BatchNorm statistics frozen); call `{model}.train()` before it")
        yield this.finding(ctx.parsed.span(event.node), message, fix,
                           related=[(ctx.parsed.span(step.node), "the training step")])
    yield from _evaluated_in_training_mode(analysis, this)


def _eval_before_training(analysis: _Analysis, loops: list[Loop]):
    """(loop, the eval() event, the training step it leaks into)."""
    facts = analysis.facts
    seen: set[int] = set()
    for loop in loops:
        events = loop.events
        for index, event in enumerate(events):
            if event.kind is not EventKind.MODE_EVAL or id(event.node) in seen:
                continue
            model = facts.target_of(event)
            if not _trains_model(facts, loop, model) or _rebuilt_in(facts, loop, model):
                continue
            resets = {id(e) for e in events if e.kind in (EventKind.MODE_TRAIN, EventKind.MODE_SET)
                      and facts.target_of(e) == model}
            if event.conditional and resets:
                continue
            for later in events[index + 1:] + events[:index]:  # one iteration, then the next
                if id(later) in resets:
                    break
                if later.kind in (EventKind.BACKWARD, EventKind.STEP):
                    seen.add(id(event.node))
                    yield loop, event, later
                    break


def _trains_model(facts: TrainingFacts, loop: Loop, model: str | None) -> bool:
    """Does the loop step an optimizer that updates `model`?"""
    if not loop.of(EventKind.BACKWARD):
        return False
    forwarded = {facts.target_of(e) for e in loop.of(EventKind.FORWARD)}
    for step in loop.of(EventKind.STEP):
        binding = facts.bindings.get(facts.target_of(step) or "")
        owner = facts.canonical(binding.model_key) if binding and binding.model_key else None
        if owner == model or (owner is None and forwarded == {model}):
            return True
    return False


def _rebuilt_in(facts: TrainingFacts, loop: Loop, model: str | None) -> bool:
    return any(any(target_key(t) == model for t in n.targets) for n in nodes(facts.parsed, ast.Assign, loop.node))


def _evaluated_in_training_mode(analysis: _Analysis, this):
    parsed, facts, evaluation = analysis.parsed, analysis.facts, analysis.evaluation
    reported: set[tuple[int, str]] = set()
    for site in analysis.sites:
        if site.after_switch:
            continue  # evaluation after model.eval(): the mode is right by definition
        key = (id(site.scope), facts.canonical(site.model) or site.model)
        if key in reported or not evaluation.has_mode_dependent_layers(site.forward.func):
            continue
        switch = analysis.mode_before(site.forward, site.model)
        if switch is not None and switch[0] is not EventKind.MODE_TRAIN:
            continue
        function = parsed.enclosing(site.forward, _FUNCTIONS)
        callers = facts.calls_by_name.get(function.name, []) if function else []
        if switch is None and any((analysis.mode_before(c, None) or (None,))[0] in (EventKind.MODE_EVAL,
                                                                                    EventKind.MODE_SET) for c in callers):
            continue
        reported.add(key)
        message = (f"`{site.model}` has Dropout/BatchNorm layers and is evaluated in {site.context} in training "
                   f"mode: dropout stays on and BatchNorm statistics change; call `{site.model}.eval()` first")
        yield this.finding(parsed.span(site.forward), message, _insert_eval_fix(analysis, site, function, callers))


def _insert_eval_fix(analysis: _Analysis, site: EvaluationSite, function, callers) -> Fix | None:
    parsed, model = analysis.parsed, site.model
    title = f"Insert `{model}.eval()` before the evaluation"
    if isinstance(site.scope, _LOOPS):
        edits = [insert_before(parsed, site.scope, f"{model}.eval()")]
        if any(loop.of(EventKind.BACKWARD) for loop in _loops_around(analysis.facts, site.scope)):
            edits.append(insert_after(parsed, site.scope, f"{model}.train()"))
            title = f"Evaluate in `{model}.eval()` mode and switch back with `{model}.train()`"
        return fix_of(title, *edits)
    root = model.split(".")[0]
    assigned_inside = any(n.id == root and isinstance(n.ctx, ast.Store) for n in nodes(parsed, ast.Name, function))
    in_training_loop = any(loop.of(EventKind.BACKWARD) for c in callers for loop in _loops_around(analysis.facts, c))
    if assigned_inside or in_training_loop:
        return None
    return fix_of(title, insert_before(parsed, first_statement_after_docstring(function.body), f"{model}.eval()"))


def _loops_around(facts: TrainingFacts, node: ast.AST):
    loop = facts.loop_of(node)
    while loop is not None:
        yield loop
        loop = facts.loop_of(loop.node)
