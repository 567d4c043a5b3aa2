"""Call order inside training loops (TL102, TL106, TL110).

All three read the loop's events in the order one iteration runs them (helpers inlined), and
match optimizers, schedulers and models by what they were built from, through aliases.
"""

from __future__ import annotations

import ast

from torch_lsp.analysis.facts import Severity
from torch_lsp.analysis.rules import REGISTRY, RuleContext, rule
from torch_lsp.analysis.rules._blocks import block_of, move_statement, statement_in, statement_of
from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.syntax import target_key
from torch_lsp.analysis.training import Event, EventKind, Kind, Loop, TrainingFacts

_GUARDS = (ast.If, ast.IfExp, ast.ExceptHandler, ast.While)


@rule("TL102", "zero-grad-before-step", Severity.WARNING,
      "zero_grad() runs between backward() and step() of the same optimizer: the step uses no gradients.",
      fixable=True, scope="statement")
def zero_grad_between_backward_and_step(ctx: RuleContext):
    """
    ## What it does
    Finds `optimizer.zero_grad()` (or `model.zero_grad()` for the model that optimizer
    updates) called after `loss.backward()` and before `optimizer.step()` in the same
    iteration of a loop, also when any of the three happen in a helper function.

    ## Why is this bad?
    `zero_grad()` wipes the gradients that `backward()` just computed, so `step()` applies
    nothing (or only weight decay). The loss stays flat and nothing raises.

    Clearing *another* optimizer's gradients between the two is fine: a GAN clears the
    generator's gradients after the discriminator's backward and is not reported. A
    `zero_grad()` under its own condition (dropping a batch whose gradients are NaN) is not
    reported either.

    ## Example
    ```python
    for inputs, labels in loader:
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()
    ```

    ## Use instead
    ```python
    for inputs, labels in loader:
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
    ```

    ## Fix
    Moves the `zero_grad()` line before the forward pass of that step (when the forward pass
    is in the same block; otherwise before the `backward()` line).

    Suppress with `# torch-lsp: ignore[TL102]` on the `zero_grad()` line.
    """
    this = REGISTRY["TL102"]
    facts = ctx.training
    reported: set[int] = set()
    for loop in ctx.loops:
        events = loop.events
        for index, step in enumerate(events):
            if step.kind is not EventKind.STEP:
                continue
            backward_at, wipe = _wipe_after_backward(facts, loop, events, index)
            if wipe is None or id(wipe.node) in reported:
                continue
            reported.add(id(wipe.node))
            optimizer = step.target or "the optimizer"
            message = (f"`{ctx.parsed.code(wipe.node.func)}()` runs after `backward()` and before "
                       f"`{optimizer}.step()`: the gradients are wiped before the step can use them")
            yield this.finding(ctx.parsed.span(wipe.node), message, _move_zero_grad_fix(ctx, events, backward_at, wipe),
                               related=[(ctx.parsed.span(step.node), "the optimizer step")])


def _wipe_after_backward(facts: TrainingFacts, loop: Loop, events: list[Event], step_at: int):
    """(index of the last backward before the step, the zero_grad between them) or (…, None)."""
    step = events[step_at]
    optimizer = facts.target_of(step)
    wipe = None
    for index in range(step_at - 1, -1, -1):
        event = events[index]
        if event.kind is EventKind.BACKWARD:
            return index, wipe
        if event.kind is EventKind.STEP and facts.target_of(event) == optimizer:
            return index, None
        if event.kind is EventKind.ZERO_GRAD and _clears(facts, loop, event, optimizer) and _same_guard(
            facts, event, step
        ):
            wipe = event
    return -1, None


def _clears(facts: TrainingFacts, loop: Loop, zero: Event, optimizer: str | None) -> bool:
    """Does this zero_grad() clear the gradients `optimizer` is about to apply?"""
    receiver = facts.target_of(zero)
    if receiver is not None and receiver == optimizer:
        return True
    if facts.key_kind(receiver) is not Kind.MODEL:
        return False
    binding = facts.bindings.get(optimizer or "")
    owner = facts.canonical(binding.model_key) if binding else None
    if owner is not None:
        return owner == receiver
    stepped = {facts.target_of(e) for e in loop.of(EventKind.STEP)}
    return len(stepped) == 1


def _same_guard(facts: TrainingFacts, zero: Event, step: Event) -> bool:
    """An unconditional zero_grad, or one under the same condition as the step."""
    if not zero.conditional:
        return True
    guard = facts.parsed.enclosing(zero.anchor, _GUARDS)
    return guard is not None and guard is facts.parsed.enclosing(step.anchor, _GUARDS)


def _move_zero_grad_fix(ctx: RuleContext, events: list[Event], backward_at: int, wipe: Event):
    if wipe.via:
        return None
    statement = statement_of(ctx.parsed, wipe.node)
    block = block_of(ctx.parsed, statement) if statement else None
    if block is None or not isinstance(statement, ast.Expr):
        return None
    # The forward pass of this step: the first model call after the previous step.
    first_forward = None
    for event in reversed(events[:backward_at]):
        if event.kind is EventKind.STEP:
            break
        if event.kind is EventKind.FORWARD:
            first_forward = event
    for anchor, what in ((first_forward, "the forward pass"), (events[backward_at], "`backward()`")):
        target = statement_in(ctx.parsed, anchor.anchor, block) if anchor else None
        if target is not None and target.lineno < statement.lineno:
            return move_statement(ctx.parsed, statement, target, f"Move `{ctx.parsed.code(wipe.node)}` before {what}")
    return None


@rule("TL106", "scheduler-step-before-optimizer-step", Severity.WARNING,
      "scheduler.step() runs before optimizer.step() in an iteration: the first learning rate is skipped.",
      fixable=True, scope="statement")
def scheduler_before_optimizer(ctx: RuleContext):
    """
    ## What it does
    Finds `scheduler.step()` called, within one iteration of a loop, before the
    `optimizer.step()` of the optimizer that scheduler drives: a per-epoch scheduler at the top
    of the epoch loop, or a per-batch scheduler above the optimizer step.

    ## Why is this bad?
    Since PyTorch 1.1 the scheduler must step after the optimizer. Stepping it first skips the
    first value of the schedule (warm-up starts one step late, a step decay comes one epoch
    early), and PyTorch only warns once, at run time.

    Not reported: `ReduceLROnPlateau` (or any scheduler) stepped with an argument such as a
    validation metric, per-batch schedulers (OneCycleLR, CyclicLR) placed after the
    optimizer step, and a scheduler step under a condition (`if epoch > 0:
    scheduler.step()` at the top of the epoch loop steps after the previous epoch's updates).

    ## Example
    ```python
    for epoch in range(epochs):
        scheduler.step()
        for inputs, labels in loader:
            ...
            optimizer.step()
    ```

    ## Use instead
    ```python
    for epoch in range(epochs):
        for inputs, labels in loader:
            ...
            optimizer.step()
        scheduler.step()
    ```

    ## Fix
    Moves the `scheduler.step()` line after the statement of the loop body that performs the
    optimizer step.

    Suppress with `# torch-lsp: ignore[TL106]` on the `scheduler.step()` line.
    """
    this = REGISTRY["TL106"]
    facts = ctx.training
    reported: set[int] = set()
    for loop in ctx.loops:
        events = loop.events
        for index, event in enumerate(events):
            if event.kind is not EventKind.SCHEDULER_STEP or id(event.node) in reported or _takes_metric(facts, event):
                continue
            if event.conditional:  # `if epoch > 0: scheduler.step()` steps after the last epoch's updates
                continue
            driven = _driven_optimizer(facts, event)
            steps = [(at, e) for at, e in enumerate(events)
                     if e.kind is EventKind.STEP and driven in (None, facts.target_of(e))]
            earlier = [e for at, e in steps if at < index]
            later = [e for at, e in steps if at > index]
            if earlier or not later:
                continue
            reported.add(id(event.node))
            message = (f"`{ctx.parsed.code(event.node)}` runs before `{later[0].target}.step()` in this iteration: "
                       f"the schedule's first learning rate is skipped; step the scheduler after the optimizer")
            yield this.finding(ctx.parsed.span(event.node), message, _move_scheduler_fix(ctx, event, later[-1]),
                               related=[(ctx.parsed.span(later[0].node), "the optimizer step")])


def _takes_metric(facts: TrainingFacts, event: Event) -> bool:
    binding = facts.bindings.get(facts.target_of(event) or "")
    plateau = binding is not None and binding.constructor.endswith("ReduceLROnPlateau")
    return plateau or bool(event.node.args or event.node.keywords)


def _driven_optimizer(facts: TrainingFacts, event: Event) -> str | None:
    binding = facts.bindings.get(facts.target_of(event) or "")
    return facts.canonical(binding.optimizer_key) if binding and binding.optimizer_key else None


def _move_scheduler_fix(ctx: RuleContext, event: Event, last_step: Event):
    if event.via:
        return None
    statement = statement_of(ctx.parsed, event.node)
    block = block_of(ctx.parsed, statement) if statement else None
    if block is None or not isinstance(statement, ast.Expr):
        return None
    target = statement_in(ctx.parsed, last_step.anchor, block)
    if target is None or target.lineno < statement.lineno:
        return None
    return move_statement(ctx.parsed, statement, target, f"Move `{ctx.parsed.code(event.node)}` after the optimizer step",
                          after=True)


@rule("TL110", "optimizer-created-in-loop", Severity.WARNING,
      "An optimizer is constructed inside the training loop: its state is reset on every step.", scope="statement")
def optimizer_built_in_loop(ctx: RuleContext):
    """
    ## What it does
    Finds an optimizer constructed (directly, or through a helper that returns one) in the
    body of a loop that steps an optimizer on every iteration.

    ## Why is this bad?
    A new optimizer starts with empty state: momentum buffers, Adam's moment estimates and
    step counts are thrown away each step, so Adam degenerates into sign-SGD with a warm-up
    that never ends, and any scheduler attached to the old optimizer stops having an effect.

    Not reported: an optimizer built under a condition (staged unfreezing that rebuilds the
    optimizer at chosen epochs), one built in an outer loop whose inner loop does the steps
    (hyper-parameter sweeps, k-fold runs), and one built for a model that is itself re-created
    in the same iteration.

    ## Example
    ```python
    for inputs, labels in loader:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        optimizer.zero_grad()
        criterion(model(inputs), labels).backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for inputs, labels in loader:
        optimizer.zero_grad()
        criterion(model(inputs), labels).backward()
        optimizer.step()
    ```

    ## Fix
    None offered: the constructor may depend on loop variables. Move it above the loop.

    Suppress with `# torch-lsp: ignore[TL110]` on the constructor line.
    """
    this = REGISTRY["TL110"]
    facts = ctx.training
    reported: set[int] = set()
    for loop in ctx.loops:
        if not any(facts.once_per_iteration(loop, e) for e in loop.of(EventKind.STEP)):
            continue
        for event in loop.of(EventKind.CALL):
            if event.conditional or id(event.anchor) in reported or not facts.once_per_iteration(loop, event):
                continue
            found = facts.classify(event.node)
            if found is None or found[0] is not Kind.OPTIMIZER or _model_rebuilt_in(facts, loop, found[2]):
                continue
            reported.add(id(event.anchor))
            message = (f"`{found[1].rsplit('.', 1)[-1]}` optimizer constructed inside the training loop: its state "
                       f"(momentum, Adam moments) is reset every iteration; construct it once, before the loop")
            header = ctx.parsed.span(loop.node)
            yield this.finding(ctx.parsed.span(event.anchor), message,
                               related=[(type(header)(header.start, header.start), "the training loop")])


def _model_rebuilt_in(facts: TrainingFacts, loop: Loop, constructor: ast.Call | None) -> bool:
    """Is the model this optimizer updates re-created in the same loop (a fresh run each time)?"""
    if constructor is None or not constructor.args:
        return False
    owner = next((target_key(n.func.value) for n in ast.walk(constructor.args[0]) if isinstance(n, ast.Call)
                  and isinstance(n.func, ast.Attribute) and n.func.attr in ("parameters", "named_parameters")), None)
    if owner is None:
        return False
    for node in nodes(facts.parsed, ast.Assign, loop.node):
        if any(target_key(t) == owner for t in node.targets):
            return True
    return False
