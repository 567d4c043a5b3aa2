"""Regularisers (issue 5, item 4): weight decay, Adam -> AdamW, Dropout, L1/L2 penalties,
gradient clipping, label smoothing, early stopping.

Each one edits the piece it belongs to (the optimizer call, the model class, the loss
statement, the spot between backward() and step(), the loss constructor, the epoch loop) and
is offered there: on that variable or inside the training loop, only while it is absent.
"""

from __future__ import annotations

import ast

from torch_lsp.scaffold import action
from torch_lsp.analysis.facts import Span
from torch_lsp.analysis.training import Kind
from torch_lsp.scaffold.codemod import EditPlan, render
from torch_lsp.scaffold.context import ScaffoldContext
from torch_lsp.scaffold.templates import can_validate, ensure_validation, fresh_name, insert_after_validation

# Weight decay that suits each optimizer family (AdamW already decays by default: not offered).
_WEIGHT_DECAY = {"torch.optim.SGD": "5e-4", "torch.optim.AdamW": None}
_DEFAULT_WEIGHT_DECAY = "1e-4"

_FUNCTIONAL_ACTIVATIONS = tuple(f"torch.nn.functional.{n}" for n in (
    "relu", "relu6", "gelu", "silu", "elu", "leaky_relu", "selu", "mish", "hardswish", "tanh", "sigmoid")) + (
    "torch.relu", "torch.tanh", "torch.sigmoid")
_ACTIVATION_MODULES = tuple(f"torch.nn.{n}" for n in (
    "ReLU", "ReLU6", "GELU", "SiLU", "ELU", "LeakyReLU", "SELU", "Mish", "Hardswish", "Tanh", "Sigmoid"))
_DROPOUTS = ("torch.nn.Dropout", "torch.nn.Dropout1d", "torch.nn.Dropout2d", "torch.nn.Dropout3d",
             "torch.nn.AlphaDropout", "torch.nn.functional.dropout")


def _keyword(call: ast.Call | None, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None) if call is not None else None


def _is_zero(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value == 0


def _on_optimizer(ctx: ScaffoldContext) -> bool:
    return ctx.optimizer is not None and (ctx.cursor_on_key(ctx.optimizer.key) or ctx.cursor_in_training_loop)


def _trained_model(ctx: ScaffoldContext, statement: ast.stmt | None = None) -> str | None:
    """The model whose parameters the optimizer updates, as `statement` sees it: inside a helper
    like `train_one_epoch(model, ...)` that is the helper's model parameter."""
    key = ctx.optimizer.model_key if ctx.optimizer is not None and ctx.optimizer.model_key else (
        ctx.model.key if ctx.model else None)
    function = ctx.parsed.enclosing(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) if statement else None
    if function is not None:
        parameters = [a.arg for a in function.args.posonlyargs + function.args.args]
        if key in parameters:
            return key
        for name in parameters:
            if ctx.facts.key_kind(name) is Kind.MODEL:
                return name
    return key


# -- weight decay, AdamW -------------------------------------------------------------------------
def _weight_decay_value(ctx: ScaffoldContext) -> str | None:
    return _WEIGHT_DECAY.get(ctx.optimizer.constructor, _DEFAULT_WEIGHT_DECAY)


def _can_add_weight_decay(ctx: ScaffoldContext) -> bool:
    call = ctx.constructor_call(ctx.optimizer)
    if call is None or not _on_optimizer(ctx) or _weight_decay_value(ctx) is None:
        return False
    current = _keyword(call, "weight_decay")
    return current is None or _is_zero(current)


@action("reg.weight_decay", lambda ctx: f"Add weight decay ({_weight_decay_value(ctx)}) to `{ctx.optimizer.key}`",
        when=_can_add_weight_decay)
def add_weight_decay(ctx: ScaffoldContext, plan: EditPlan) -> None:
    plan.set_keyword(ctx.constructor_call(ctx.optimizer), "weight_decay", _weight_decay_value(ctx))


def _can_switch_to_adamw(ctx: ScaffoldContext) -> bool:
    return _on_optimizer(ctx) and ctx.optimizer.constructor == "torch.optim.Adam" and \
        ctx.constructor_call(ctx.optimizer) is not None


@action("reg.adamw", "Switch Adam to AdamW (decoupled weight decay)", when=_can_switch_to_adamw)
def switch_to_adamw(ctx: ScaffoldContext, plan: EditPlan) -> None:
    plan.replace_node(ctx.constructor_call(ctx.optimizer).func, plan.reference("torch.optim.AdamW"))


# -- dropout -------------------------------------------------------------------------------------
def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    return next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def _is_activation(ctx: ScaffoldContext, call: ast.AST) -> bool:
    if not isinstance(call, ast.Call):
        return False
    if ctx.parsed.resolves_to(call.func, *_FUNCTIONAL_ACTIVATIONS, *_ACTIVATION_MODULES):
        return True
    binding = ctx.facts.bindings.get(ctx.parsed.qualified_name(call.func) or "")
    return binding is not None and binding.constructor in _ACTIVATION_MODULES


def _forward_activation_sites(ctx: ScaffoldContext, cls: ast.ClassDef) -> list[ast.Assign]:
    """`x = F.relu(self.fc1(x))` statements of forward(): where dropout goes."""
    forward = _method(cls, "forward")
    if forward is None or _method(cls, "__init__") is None:
        return []
    return [s for s in forward.body if isinstance(s, ast.Assign) and len(s.targets) == 1
            and isinstance(s.targets[0], ast.Name) and _is_activation(ctx, s.value)]


def _sequential_sites(ctx: ScaffoldContext) -> list[ast.expr]:
    """Activation modules inside the model's `nn.Sequential(...)`, except a final one."""
    call = ctx.constructor_call(ctx.model) if ctx.model else None
    if call is None or not ctx.parsed.resolves_to(call.func, "torch.nn.Sequential"):
        return []
    return [arg for arg in call.args[:-1] if _is_activation(ctx, arg)]


def _dropout_target(ctx: ScaffoldContext) -> ast.ClassDef | ast.Call | None:
    """The model class (cursor on it or on its instance) or the instance's nn.Sequential call."""
    on_model = ctx.model is not None and ctx.cursor_on_key(ctx.model.key)
    if ctx.cursor_class is None and not on_model:
        return None
    if ctx.model_class is not None:
        target, sites = ctx.model_class, _forward_activation_sites(ctx, ctx.model_class)
    else:
        target, sites = ctx.constructor_call(ctx.model), _sequential_sites(ctx)
    if not sites or any(isinstance(c, ast.Call) and ctx.parsed.resolves_to(c.func, *_DROPOUTS)
                        for c in ctx.parsed.walk(target, ast.Call)):
        return None
    return target


@action("reg.dropout", "Add Dropout after the model's activations", when=lambda ctx: _dropout_target(ctx) is not None)
def add_dropout(ctx: ScaffoldContext, plan: EditPlan) -> None:
    target = _dropout_target(ctx)
    dropout = plan.reference("torch.nn.Dropout")
    if isinstance(target, ast.ClassDef):
        plan.insert_at_body_end(_method(target, "__init__"), f"self.dropout = {dropout}(p=0.5)\n")
        for statement in _forward_activation_sites(ctx, target):
            name = statement.targets[0].id
            plan.insert_after(statement, f"{name} = self.dropout({name})\n")
    else:
        for activation in _sequential_sites(ctx):
            end = ctx.parsed.span(activation).end
            plan.replace_span(Span(end, end), f", {dropout}(p=0.5)")


# -- loss penalties ------------------------------------------------------------------------------
def _penalty_offered(ctx: ScaffoldContext, strength: str) -> bool:
    loop = ctx.training_loop
    return (loop is not None and isinstance(loop.loss_statement, ast.Assign) and loop.loss_name is not None
            and _trained_model(ctx) is not None and not ctx.defines(strength) and ctx.cursor_in_training_loop)


def _add_penalty(ctx: ScaffoldContext, plan: EditPlan, strength: str, value: str, term: str, what: str) -> None:
    loop = ctx.training_loop
    plan.insert_before(loop.epoch or loop.batch.node, f"{strength} = {value}  # strength of the {what} penalty\n",
                       above_comments=True)
    loss, model = loop.loss_name, _trained_model(ctx, loop.loss_statement)
    plan.insert_after(loop.loss_statement, f"{loss} = {loss} + {strength} * sum({term} for p in {model}.parameters())\n")


@action("reg.l1_penalty", "Add an L1 penalty on the weights to the loss",
        when=lambda ctx: _penalty_offered(ctx, "l1_lambda"))
def add_l1_penalty(ctx: ScaffoldContext, plan: EditPlan) -> None:
    _add_penalty(ctx, plan, "l1_lambda", "1e-5", "p.abs().sum()", "L1")


def _l2_offered(ctx: ScaffoldContext) -> bool:
    # With weight decay already on the optimizer an L2 term would apply it twice.
    decay = _keyword(ctx.constructor_call(ctx.optimizer), "weight_decay")
    return _penalty_offered(ctx, "l2_lambda") and (decay is None or _is_zero(decay))


@action("reg.l2_penalty", "Add an L2 penalty on the weights to the loss", when=_l2_offered)
def add_l2_penalty(ctx: ScaffoldContext, plan: EditPlan) -> None:
    _add_penalty(ctx, plan, "l2_lambda", "1e-4", "p.pow(2).sum()", "L2")


# -- gradient clipping ---------------------------------------------------------------------------
def _can_clip(ctx: ScaffoldContext) -> bool:
    return (ctx.training_loop is not None and _trained_model(ctx) is not None and ctx.cursor_in_training_loop
            and not any(name.endswith(("clip_grad_norm_", "clip_grad_value_")) for name in ctx.called))


@action("reg.clip_grad", "Clip the gradient norm between backward() and optimizer.step()", when=_can_clip)
def add_gradient_clipping(ctx: ScaffoldContext, plan: EditPlan) -> None:
    step = ctx.training_loop.step
    code = ""
    scaler = _scaler_stepping(ctx, step)
    if scaler is not None:
        # Under AMP the gradients are scaled: unscale them first or the threshold means nothing.
        code += f"{scaler}.unscale_({ctx.optimizer.key if ctx.optimizer else 'optimizer'})\n"
    model = _trained_model(ctx, step)
    code += f"{plan.reference('torch.nn.utils.clip_grad_norm_')}({model}.parameters(), max_norm=1.0)\n"
    plan.insert_before(step, code)


def _scaler_stepping(ctx: ScaffoldContext, statement: ast.stmt) -> str | None:
    """`scaler` when the step statement is `scaler.step(optimizer)`."""
    for call in ctx.parsed.walk(statement, ast.Call):
        if isinstance(call.func, ast.Attribute) and call.func.attr == "step" and ctx.facts.kind_of(call.func.value) is Kind.SCALER:
            return ctx.parsed.code(call.func.value)
    return None


# -- label smoothing -----------------------------------------------------------------------------
def _can_smooth_labels(ctx: ScaffoldContext) -> bool:
    call = ctx.constructor_call(ctx.loss)
    return (call is not None and ctx.loss.constructor == "torch.nn.CrossEntropyLoss"
            and _keyword(call, "label_smoothing") is None and (ctx.cursor_on_key(ctx.loss.key) or ctx.cursor_in_training_loop))


@action("reg.label_smoothing", "Add label smoothing (0.1) to CrossEntropyLoss", when=_can_smooth_labels)
def add_label_smoothing(ctx: ScaffoldContext, plan: EditPlan) -> None:
    plan.set_keyword(ctx.constructor_call(ctx.loss), "label_smoothing", "0.1")


# -- early stopping ------------------------------------------------------------------------------
EARLY_STOPPING_STATE = '''
$best = float("inf")
$patience = 5  # epochs without improvement before stopping
$waited = 0
'''

EARLY_STOPPING_CHECK = '''
if $metric < $best:
    $best = $metric
    $waited = 0
else:
    $waited += 1
    if $waited >= $patience:
        print(f"early stopping: $metric has not improved for {$patience} epochs")
        break
'''


def _can_stop_early(ctx: ScaffoldContext) -> bool:
    loop = ctx.training_loop
    if loop is None or not isinstance(loop.epoch, (ast.For, ast.While)) or not ctx.cursor_in_training_loop:
        return False
    if ctx.defines("patience") or ctx.defines("best_val_loss"):
        return False
    return can_validate(ctx)


@action("reg.early_stopping", "Stop training early when the validation loss stops improving", when=_can_stop_early)
def add_early_stopping(ctx: ScaffoldContext, plan: EditPlan) -> None:
    metric = ensure_validation(ctx, plan)
    names = {"metric": metric, "best": fresh_name(ctx, "best_val_loss"), "patience": fresh_name(ctx, "patience"),
             "waited": fresh_name(ctx, "epochs_without_improvement")}
    plan.insert_before(ctx.training_loop.epoch, render(EARLY_STOPPING_STATE, **names), above_comments=True)
    insert_after_validation(ctx, plan, render(EARLY_STOPPING_CHECK, **names))
