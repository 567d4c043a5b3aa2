"""Learning-rate schedulers (issue 5, item 3).

Each scheduler is built right after the optimizer it drives, and stepped where it must be:
once per epoch after the optimizer has stepped (the end of the epoch loop), once per batch
right after `optimizer.step()` for OneCycleLR, and with the validation loss for
ReduceLROnPlateau (which plans an `evaluate` call when the file has no validation yet).
Offered on the optimizer's variable or inside the training loop, when the file has an
optimizer, a training loop and no scheduler.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Callable

from torch_lsp.analysis.training import Kind
from torch_lsp.scaffold import Action, REWRITE, register
from torch_lsp.scaffold.codemod import EditPlan
from torch_lsp.scaffold.context import ScaffoldContext
from torch_lsp.scaffold.templates import (can_validate, ensure_validation, epochs_text, fresh_name, insert_after_validation,
                                          literal_int, setup_anchor)

PER_EPOCH, PER_BATCH, ON_METRIC = "epoch", "batch", "metric"


@dataclass(frozen=True)
class Schedule:
    id: str
    label: str
    cls: str  # class name in torch.optim.lr_scheduler
    placement: str
    arguments: Callable[..., str]  # (ctx, plan, epochs, anchor) -> "step_size=..."
    needs_epochs: bool = True


def _scaled(epochs: str, literal: Callable[[int], int], expression: str) -> str:
    """A value derived from the epoch count: computed for a literal, an expression otherwise."""
    number = literal_int(epochs)
    return str(literal(number)) if number is not None else expression.format(epochs=epochs)


def _step_lr(ctx, plan, epochs, anchor):
    return f"step_size={_scaled(epochs, lambda n: max(1, n // 3), 'max(1, {epochs} // 3)')}, gamma=0.1"


def _multi_step(ctx, plan, epochs, anchor):
    number = literal_int(epochs)
    if number is not None:
        milestones = ", ".join(str(m) for m in sorted({max(1, number // 2), max(1, number * 3 // 4)}))
    else:
        milestones = f"{epochs} // 2, {epochs} * 3 // 4"
    return f"milestones=[{milestones}], gamma=0.1"


def _one_cycle(ctx, plan, epochs, anchor):
    lr = _optimizer_lr(ctx)
    max_lr = repr(lr * 10) if lr is not None else "0.1"
    return f"max_lr={max_lr}, epochs={epochs}, steps_per_epoch=len({ctx.training_batches})"


def _warmup_cosine(ctx, plan, epochs, anchor):
    linear = plan.reference("torch.optim.lr_scheduler.LinearLR")
    cosine = plan.reference("torch.optim.lr_scheduler.CosineAnnealingLR")
    optimizer = ctx.optimizer.key
    number = literal_int(epochs)
    if number is not None:
        warmup, remaining = str(max(1, number // 10)), str(max(1, number - max(1, number // 10)))
    else:
        # Planned before the scheduler line (same place, planned first).
        warmup = fresh_name(ctx, "warmup_epochs")
        anchor.insert(plan, f"{warmup} = max(1, {epochs} // 10)\n")
        remaining = f"max(1, {epochs} - {warmup})"
    return (f"\n    schedulers=[\n        {linear}({optimizer}, start_factor=0.1, total_iters={warmup}),  # linear warmup\n"
            f"        {cosine}({optimizer}, T_max={remaining}),\n    ],\n    milestones=[{warmup}],\n")


SCHEDULES = [
    Schedule("scheduler.step_lr", "StepLR (decay by 10x every third of training)", "StepLR", PER_EPOCH, _step_lr),
    Schedule("scheduler.multistep_lr", "MultiStepLR (decay at 50% and 75% of training)", "MultiStepLR", PER_EPOCH,
             _multi_step),
    Schedule("scheduler.exponential_lr", "ExponentialLR (gamma 0.95 per epoch)", "ExponentialLR", PER_EPOCH,
             lambda ctx, plan, epochs, anchor: "gamma=0.95", needs_epochs=False),
    Schedule("scheduler.cosine_lr", "CosineAnnealingLR over all epochs", "CosineAnnealingLR", PER_EPOCH,
             lambda ctx, plan, epochs, anchor: f"T_max={epochs}"),
    Schedule("scheduler.one_cycle_lr", "OneCycleLR (stepped every batch)", "OneCycleLR", PER_BATCH, _one_cycle),
    Schedule("scheduler.reduce_on_plateau", "ReduceLROnPlateau on the validation loss", "ReduceLROnPlateau", ON_METRIC,
             lambda ctx, plan, epochs, anchor: 'mode="min", factor=0.1, patience=5', needs_epochs=False),
    Schedule("scheduler.warmup_cosine", "linear warmup then cosine decay (SequentialLR)", "SequentialLR", PER_EPOCH,
             _warmup_cosine),
]


def _optimizer_lr(ctx: ScaffoldContext) -> float | None:
    call = ctx.constructor_call(ctx.optimizer)
    for keyword in call.keywords if call else ():
        if keyword.arg == "lr" and isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, (int, float)):
            return float(keyword.value.value)
    return None


def _after_the_step(ctx: ScaffoldContext, step: ast.stmt) -> ast.stmt:
    """The optimizer step, or the `scaler.update()` right after `scaler.step(optimizer)`."""
    body = getattr(ctx.parsed.parent(step), "body", [])
    following = body[body.index(step) + 1] if step in body and body.index(step) + 1 < len(body) else None
    if isinstance(following, ast.Expr) and isinstance(following.value, ast.Call) and \
            isinstance(following.value.func, ast.Attribute) and following.value.func.attr == "update" and \
            ctx.facts.kind_of(following.value.func.value) is Kind.SCALER:
        return following
    return step


def _offered_for(schedule: Schedule) -> Callable[[ScaffoldContext], bool]:
    def when(ctx: ScaffoldContext) -> bool:
        loop, optimizer = ctx.training_loop, ctx.optimizer
        if loop is None or optimizer is None or ctx.scheduler is not None:
            return False
        if schedule.placement == PER_BATCH and ctx.training_batches is None:
            return False
        statement = ctx.binding_statement(optimizer)
        if statement is None or (loop.epoch is None and schedule.placement != PER_BATCH):
            return False
        if statement.lineno >= (loop.epoch or loop.batch.node).lineno:
            return False  # the optimizer is rebuilt inside the loop: a schedule would restart
        if schedule.needs_epochs and ctx.epochs is None:
            return False
        if schedule.placement == ON_METRIC and not can_validate(ctx):
            return False
        return ctx.cursor_on_key(optimizer.key) or ctx.cursor_in_training_loop

    return when


def _edit_for(schedule: Schedule) -> Callable[[ScaffoldContext, EditPlan], None]:
    def edit(ctx: ScaffoldContext, plan: EditPlan) -> None:
        loop, optimizer = ctx.training_loop, ctx.optimizer.key
        needs_epochs = schedule.needs_epochs or schedule.placement == PER_BATCH
        anchor = setup_anchor(ctx, ctx.binding_statement(ctx.optimizer), ctx.epochs if needs_epochs else None,
                              ctx.training_batches if schedule.placement == PER_BATCH else None)
        epochs = epochs_text(ctx, plan, anchor) if needs_epochs else ""
        name = fresh_name(ctx, "scheduler")
        cls = plan.reference(f"torch.optim.lr_scheduler.{schedule.cls}")
        arguments = schedule.arguments(ctx, plan, epochs, anchor)
        if arguments.startswith("\n"):  # one argument per line
            anchor.insert(plan, f"{name} = {cls}(\n    {optimizer},{arguments})\n")
        else:
            anchor.insert(plan, f"{name} = {cls}({optimizer}, {arguments})\n")
        if schedule.placement == PER_EPOCH:
            plan.insert_at_body_end(loop.epoch, f"{name}.step()  # once per epoch, after the optimizer steps\n")
        elif schedule.placement == PER_BATCH:
            plan.insert_after(_after_the_step(ctx, loop.step), f"{name}.step()  # OneCycleLR steps after every batch\n")
        elif schedule.placement == ON_METRIC:
            metric = ensure_validation(ctx, plan)
            insert_after_validation(ctx, plan, f"{name}.step({metric})  # reduces the LR when {metric} stops improving\n")

    return edit


for _schedule in SCHEDULES:
    register(Action(_schedule.id, f"Add an LR scheduler: {_schedule.label}", REWRITE, _offered_for(_schedule),
                    _edit_for(_schedule), "schedulers"))
