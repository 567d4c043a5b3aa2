"""Gradient bookkeeping in training loops (TL101)."""

from __future__ import annotations

from torch_lsp.analysis.facts import Severity
from torch_lsp.analysis.rules import REGISTRY, RuleContext, rule
from torch_lsp.analysis.rules._edits import insert_statement_before
from torch_lsp.analysis.training import EventKind, Loop

_CLEARING = (EventKind.ZERO_GRAD, EventKind.GRAD_NONE)


@rule("TL101", "gradients-never-cleared", Severity.WARNING,
      "A training loop calls backward() and optimizer.step() but never clears the gradients.",
      fixable=True, scope="statement")
def gradients_never_cleared(ctx: RuleContext):
    """
    ## What it does
    Finds loops whose body calls `.backward()` and `optimizer.step()` but never clears the
    gradients: no `optimizer.zero_grad()`, no `model.zero_grad()`, no `p.grad = None`,
    anywhere in the loop body or in the helper functions it calls.

    ## Why is this bad?
    `.backward()` *adds* to `.grad`. Without clearing, every `step()` applies the sum of the
    gradients of all previous batches: the effective learning rate grows each step and
    training diverges or stalls, without any error.

    Gradient accumulation (clearing under a condition, or every k steps), clearing at the end
    of the body, `zero_grad(set_to_none=True)` and LBFGS closures that clear are all fine and
    not reported.

    ## Example
    ```python
    for inputs, labels in loader:
        loss = criterion(model(inputs), labels)
        loss.backward()
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
    Inserts `optimizer.zero_grad()` at the top of the loop body.
    """
    this = REGISTRY["TL101"]
    for loop in ctx.loops:
        if not _trains(loop) or any(_trains(inner) for inner in _nested(loop)):
            continue
        if loop.of(EventKind.ZERO_GRAD) or loop.of(EventKind.GRAD_NONE):
            continue
        step = loop.of(EventKind.STEP)[0]
        optimizer = step.target or "optimizer"
        fix = None
        # The fix names the optimizer as the loop sees it; through a helper only a module-level
        # optimizer (not a helper's parameter) is sure to have the same name in the loop.
        binding = ctx.training.bindings.get(optimizer)
        if not step.via or (binding is not None and binding.constructor):
            fix = insert_statement_before(ctx.parsed, loop.node.body[0], f"{optimizer}.zero_grad()",
                                          f"Insert `{optimizer}.zero_grad()` at the top of the loop")
        message = (f"gradients are never cleared: `{optimizer}.step()` applies gradients summed over every "
                   f"previous iteration; call `{optimizer}.zero_grad()` in the loop")
        header = ctx.parsed.span(loop.node)
        yield this.finding(ctx.parsed.span(step.anchor), message, fix,
                           related=[(type(header)(header.start, header.start), "the training loop")])


def _trains(loop: Loop) -> bool:
    return bool(loop.of(EventKind.BACKWARD)) and bool(loop.of(EventKind.STEP))


def _nested(loop: Loop):
    for inner in loop.inner:
        yield inner
        yield from _nested(inner)
