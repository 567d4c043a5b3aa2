"""Mixed precision and gradient accumulation on the existing training loop (issue 5, item 5).

- `precision.amp`: the forward pass and the loss under `torch.autocast`, the backward pass and
  the optimizer step through a `torch.amp.GradScaler`. Device-aware: float16 with loss scaling
  on CUDA; bfloat16 without scaling elsewhere (the scaler is created disabled, so the same code
  runs everywhere). An existing `clip_grad_norm_` gets `scaler.unscale_(optimizer)` before it,
  so it clips the true gradients.
- `precision.accumulate`: gradient accumulation. The loss is divided by the number of
  accumulation steps, and the optimizer step (with clipping, the scaler and `zero_grad`, moved
  there) runs every N batches and on the last batch of the epoch.

Both are offered with the cursor in the training loop (or on the optimizer) when the loop is
a plain `zero_grad / forward / loss / backward / step` sequence in one block.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from torch_lsp.analysis.facts import Position, Span
from torch_lsp.analysis.syntax import target_key
from torch_lsp.analysis.training import EventKind, Kind
from torch_lsp.scaffold import action
from torch_lsp.scaffold._blocks import bound_before, delete_statement, simple_call_statement, wrap_in_block
from torch_lsp.scaffold.codemod import EditPlan, render
from torch_lsp.scaffold.context import ScaffoldContext, TrainingLoop
from torch_lsp.scaffold.templates import fresh_name

_AUTOCASTS = ("torch.autocast", "torch.amp.autocast", "torch.cuda.amp.autocast", "torch.cpu.amp.autocast")
_CLIPS = ("torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_value_", "torch.nn.utils.clip_grad.")
_STEP_PHASE_METHODS = {"step", "update", "unscale_", "zero_grad"}

AMP_SETUP = '''
# Mixed precision: float16 with loss scaling on CUDA; bfloat16 elsewhere, which needs no scaling
# (the scaler is then disabled and passes calls through), so this runs on any device.
$device_type = $device_type_of
$dtype = $torch.float16 if $device_type == "cuda" else $torch.bfloat16
$scaler = $torch.amp.GradScaler($device_type, enabled=$dtype == $torch.float16)
'''

ACCUMULATION_SETUP = '''
# Gradient accumulation: step the optimizer every $steps batches, for an effective batch size
# $steps times larger at the same memory cost.
$name = $steps
'''


@dataclass(frozen=True)
class StepLayout:
    """The training loop's statements, when they form one simple block."""

    loop: TrainingLoop
    body: list[ast.stmt]  # the batch loop's body
    forward: list[ast.stmt]  # from the model call through the loss statement
    step_phase: list[ast.stmt]  # right after backward: clipping, step, scaler.update, zero_grad
    zero_grads: list[ast.stmt]  # zero_grad statements elsewhere in the body
    optimizer: str
    setup_anchor: ast.stmt  # code the loop needs goes just before this statement


def step_layout(ctx: ScaffoldContext) -> StepLayout | None:
    loop = ctx.training_loop
    if loop is None or ctx.optimizer is None:
        return None
    body = loop.batch.node.body
    loss_statement = _loss_statement(loop)
    if loop.backward not in body or loss_statement is None:
        return None
    step_call = simple_call_statement(loop.step, "step")
    if step_call is None or simple_call_statement(loop.backward, "backward") is None:
        return None
    phase = _step_phase(ctx, loop.step)
    zero_grads = [s for s in body if s not in phase and simple_call_statement(s, "zero_grad") is not None]
    if len(loop.batch.of(EventKind.ZERO_GRAD)) != len(zero_grads) + sum(
            simple_call_statement(s, "zero_grad") is not None for s in phase):
        return None  # zero_grad somewhere we would not move (a helper, a branch)
    forward = _forward_statements(ctx, body, loss_statement)
    anchor = loop.epoch if loop.epoch is not None and _same_scope(ctx, loop.epoch, loop.batch.node) else loop.batch.node
    stepped = step_call.args[0] if ctx.facts.key_kind(target_key(step_call.func.value)) is Kind.SCALER else step_call.func.value
    return StepLayout(loop, body, forward, phase, zero_grads, target_key(stepped) or ctx.optimizer.key, anchor)


def _loss_statement(loop: TrainingLoop) -> ast.stmt | None:
    """The last statement of the loop body before backward that assigns a name the backward
    receiver uses: `loss` for `loss.backward()`, `(loss / n).backward()`,
    `scaler.scale(loss).backward()` (TrainingLoop.loss_statement only knows the first)."""
    body = loop.batch.node.body
    receiver = loop.backward.value.func.value
    used = {n.id for n in ast.walk(receiver) if isinstance(n, ast.Name)}
    found = None
    for statement in body[:body.index(loop.backward)]:
        # Under `with autocast(...)` the assignment is one level down; the `with` is what counts.
        inner = statement.body if isinstance(statement, ast.With) else [statement]
        for candidate in inner:
            targets = candidate.targets if isinstance(candidate, ast.Assign) else [getattr(candidate, "target", None)]
            if isinstance(candidate, (ast.Assign, ast.AnnAssign)) and any(
                    isinstance(t, ast.Name) and t.id in used for t in targets):
                found = statement
    return found


def _step_phase(ctx: ScaffoldContext, step: ast.stmt) -> list[ast.stmt]:
    """The run of step-phase statements (clipping, step, scaler.update, ...) around `step`."""
    block = next(b for b in _blocks_of(ctx.parsed.parent(step)) if step in b)
    index = block.index(step)
    start = index
    while start > 0 and _in_step_phase(ctx, block[start - 1]):
        start -= 1
    end = index
    while end + 1 < len(block) and _in_step_phase(ctx, block[end + 1]):
        end += 1
    return block[start:end + 1]


def _blocks_of(compound: ast.AST) -> list[list[ast.stmt]]:
    return [getattr(compound, name) for name in ("body", "orelse", "finalbody") if getattr(compound, name, None)]


def _in_step_phase(ctx: ScaffoldContext, statement: ast.stmt) -> bool:
    if not isinstance(statement, ast.Expr) or not isinstance(statement.value, ast.Call):
        return False
    func = statement.value.func
    if ctx.parsed.resolves_to(func, *_CLIPS):
        return True
    if isinstance(func, ast.Attribute) and func.attr in _STEP_PHASE_METHODS:
        kind = ctx.facts.key_kind(target_key(func.value))
        return kind in (Kind.OPTIMIZER, Kind.SCALER) or (kind is Kind.SCHEDULER and func.attr == "step")
    return False


def _forward_statements(ctx: ScaffoldContext, body: list[ast.stmt], loss_statement: ast.stmt) -> list[ast.stmt]:
    """The statements from the first one that calls the model through the loss statement."""
    end = body.index(loss_statement)
    model = ctx.model.key if ctx.model else None
    start = end
    for index in range(end - 1, -1, -1):
        statement = body[index]
        if simple_call_statement(statement, "zero_grad") is not None or not isinstance(statement, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr)):
            break
        if model and any(isinstance(c, ast.Call) and target_key(c.func) == model for c in ast.walk(statement)):
            start = index
    return body[start:end + 1]


def _same_scope(ctx: ScaffoldContext, a: ast.AST, b: ast.AST) -> bool:
    return ctx.parsed.enclosing(a, (ast.FunctionDef, ast.AsyncFunctionDef)) is ctx.parsed.enclosing(
        b, (ast.FunctionDef, ast.AsyncFunctionDef))


def _cursor_fits(ctx: ScaffoldContext) -> bool:
    return ctx.cursor_in_training_loop or (ctx.optimizer is not None and ctx.cursor_on_key(ctx.optimizer.key))


def device_type_expression(ctx: ScaffoldContext, plan: EditPlan, anchor: ast.stmt) -> str:
    """Code for the device type ("cuda", "cpu", ...) the loop runs on, valid before `anchor`."""
    if ctx.device and bound_before(plan, ctx.device, anchor):
        # Works for a torch.device and for a string like "cuda:0" alike.
        return f'str({ctx.device}).split(":")[0]'

    # No device variable: the file's tensors stay on the CPU.
    return '"cpu"'


# -- mixed precision -------------------------------------------------------------------------------
def _can_add_amp(ctx: ScaffoldContext) -> bool:
    if ctx.calls(*_AUTOCASTS) or ctx.bindings_of(Kind.SCALER) or not _cursor_fits(ctx):
        return False
    return step_layout(ctx) is not None


@action("precision.amp", "Train with mixed precision (torch.autocast + torch.amp.GradScaler)", when=_can_add_amp)
def add_mixed_precision(ctx: ScaffoldContext, plan: EditPlan) -> None:
    layout = step_layout(ctx)
    torch = plan.reference("torch.amp.GradScaler").split(".amp.", 1)[0]
    names = {"torch": torch, "device_type": fresh_name(ctx, "amp_device_type"), "dtype": fresh_name(ctx, "amp_dtype"),
             "scaler": fresh_name(ctx, "scaler")}
    names["device_type_of"] = device_type_expression(ctx, plan, layout.setup_anchor)
    plan.insert_before(layout.setup_anchor, render(AMP_SETUP, **names) + "\n", above_comments=True)

    plan.wrap_in_with(layout.forward, f"{torch}.autocast(device_type={names['device_type']}, dtype={names['dtype']})")
    loss_receiver = layout.loop.backward.value.func.value
    plan.replace_span(_span_with_parentheses(ctx, loss_receiver),
                      f"{names['scaler']}.scale({ctx.parsed.code(loss_receiver)})")
    for statement in layout.step_phase:
        call = statement.value
        if ctx.parsed.resolves_to(call.func, *_CLIPS):
            # Clip the true gradients, not the scaled ones.
            plan.insert_before(statement, f"{names['scaler']}.unscale_({layout.optimizer})\n")
    plan.replace_node(layout.loop.step.value, f"{names['scaler']}.step({layout.optimizer})")
    plan.insert_after(layout.loop.step, f"{names['scaler']}.update()\n")


# -- gradient accumulation -------------------------------------------------------------------------
ACCUMULATION_STEPS = 4


def _can_accumulate(ctx: ScaffoldContext) -> bool:
    if ctx.defines("accumulation_steps") or not _cursor_fits(ctx):
        return False
    layout = step_layout(ctx)
    if layout is None or any(e.conditional for e in layout.loop.batch.of(EventKind.STEP)):
        return False  # a step that is already conditional (every N batches) is accumulation
    # The step phase must follow backward directly, in the loop's own body.
    after_backward = layout.body.index(layout.loop.backward) + 1
    return layout.body[after_backward:after_backward + len(layout.step_phase)] == layout.step_phase


@action("precision.accumulate", f"Accumulate gradients over {ACCUMULATION_STEPS} batches before each optimizer step",
        when=_can_accumulate)
def add_gradient_accumulation(ctx: ScaffoldContext, plan: EditPlan) -> None:
    layout = step_layout(ctx)
    steps = "accumulation_steps"
    plan.insert_before(layout.setup_anchor, render(ACCUMULATION_SETUP, name=steps, steps=ACCUMULATION_STEPS) + "\n",
                       above_comments=True)

    # Each batch's gradient is 1/N of an ordinary one, so N of them add up to one batch's mean.
    receiver = layout.loop.backward.value.func.value
    scaled = receiver.args[0] if _is_scaler_scale(ctx, receiver) else receiver
    plan.replace_node(scaled, f"({ctx.parsed.code(scaled)} / {steps})" if scaled is receiver
                      else f"{ctx.parsed.code(scaled)} / {steps}")

    index, loader = _batch_index(ctx, plan, layout)
    last_batch = f" or {index} + 1 == len({loader})" if loader else ""
    trailer = "".join(ctx.parsed.code(z) + "\n" for z in layout.zero_grads)
    if not layout.zero_grads and not any(simple_call_statement(s, "zero_grad") for s in layout.step_phase):
        trailer = f"{layout.optimizer}.zero_grad()\n"
    for statement in layout.zero_grads:
        delete_statement(plan, statement)
    wrap_in_block(plan, layout.step_phase, f"if ({index} + 1) % {steps} == 0{last_batch}", trailer=trailer)


def _span_with_parentheses(ctx: ScaffoldContext, node: ast.AST):
    """`node`'s span, widened over one pair of parentheses around it (`(loss / n).backward()`)."""
    span = ctx.parsed.span(node)
    line = ctx.parsed.line_text(span.start.line)
    end_line = ctx.parsed.line_text(span.end.line)
    if span.start.col > 0 and line[span.start.col - 1] == "(" and end_line[span.end.col:span.end.col + 1] == ")":
        return Span(Position(span.start.line, span.start.col - 1), Position(span.end.line, span.end.col + 1))
    return span


def _is_scaler_scale(ctx: ScaffoldContext, expr: ast.AST) -> bool:
    return (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "scale"
            and len(expr.args) == 1 and ctx.facts.key_kind(target_key(expr.func.value)) is Kind.SCALER)


def _batch_index(ctx: ScaffoldContext, plan: EditPlan, layout: StepLayout) -> tuple[str, str | None]:
    """(the batch index variable, the loader to take len() of): the loop's own `enumerate`
    index, or a new one (the loop header becomes `for batch_index, (...) in enumerate(...)`)."""
    loop = layout.loop.batch.node
    iterable = loop.iter
    if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name) and iterable.func.id == "enumerate" \
            and isinstance(loop.target, ast.Tuple) and isinstance(loop.target.elts[0], ast.Name) \
            and (len(iterable.args) == 1 or _is_zero(iterable.args[1])):
        return loop.target.elts[0].id, _loader_key(ctx, iterable.args[0])
    index = fresh_name(ctx, "batch_index")
    target = ctx.parsed.code(loop.target)
    if isinstance(loop.target, ast.Tuple) and not target.startswith("("):
        target = f"({target})"
    plan.replace_node(loop.target, f"{index}, {target}")
    plan.replace_node(iterable, f"enumerate({ctx.parsed.code(iterable)})")
    return index, _loader_key(ctx, iterable)


def _loader_key(ctx: ScaffoldContext, expr: ast.AST) -> str | None:
    key = target_key(expr)
    return key if ctx.facts.key_kind(key) is Kind.LOADER else None


def _is_zero(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value == 0

