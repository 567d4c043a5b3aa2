"""Training and evaluation loops (issue 5, items 1 and 2).

- `loop.train`: a complete training loop for the model under the cursor (its class or its
  variable): device selection, epochs, `model.train()`, zero_grad / forward / loss / backward /
  step, running loss with `.item()`, a per-epoch report. Offered when the file has a training
  loader and no training loop yet.
- `loop.train_functions`: the same as `train_one_epoch(...)` and `evaluate(...)` functions and a
  short epoch loop that calls them.
- `loop.evaluate`: an `evaluate` function (`model.eval()`, `torch.no_grad()`, loss and accuracy,
  back to `model.train()`) called at the end of every epoch of the existing training loop.
"""

from __future__ import annotations

import ast

from torch_lsp.scaffold import SOURCE, action
from torch_lsp.scaffold.codemod import EditPlan, render
from torch_lsp.scaffold.context import ScaffoldContext
from torch_lsp.scaffold.templates import (can_validate, defined_at_module_level, ensure_validation, evaluate_function,
                                          fresh_name)

TRAINING_LOOP = '''
for $epoch in range($epochs):
    $model.train()
    $running_loss = 0.0
    for $inputs, $labels in $loader:
        $inputs, $labels = $inputs.to($device), $labels.to($device)
        $optimizer.zero_grad()
        $outputs = $model($inputs)
        $loss = $criterion($outputs, $labels)
        $loss.backward()
        $optimizer.step()
        $running_loss += $loss.item()
    print(f"epoch {$epoch + 1}/{$epochs}: train loss {$running_loss / len($loader):.4f}")
'''

TRAIN_ONE_EPOCH = '''
def train_one_epoch(model, loader, criterion, optimizer, device):
    """One pass over `loader`; returns the average training loss."""
    model.train()
    running_loss = 0.0
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    return running_loss / len(loader)
'''

EPOCH_LOOP_WITH_FUNCTIONS = '''
for $epoch in range($epochs):
    train_loss = train_one_epoch($model, $loader, $criterion, $optimizer, $device)
    val_loss, val_accuracy = evaluate($model, $val_loader, $criterion, $device)
    print(f"epoch {$epoch + 1}/{$epochs}: train loss {train_loss:.4f}, "
          f"val loss {val_loss:.4f}, val accuracy {val_accuracy:.2%}")
'''


def _model_label(ctx: ScaffoldContext) -> str:
    if ctx.model is not None:
        return ctx.model.key
    return ctx.cursor_class.name if ctx.cursor_class else "the model"


# -- where a new training loop makes sense ---------------------------------------------------------
def _can_write_training_loop(ctx: ScaffoldContext) -> bool:
    if ctx.training_loop is not None or (ctx.train_loader is None and ctx.train_dataset is None):
        return False
    module_level = [ctx.train_loader, ctx.model, ctx.optimizer, ctx.loss]
    if not all(b is None or defined_at_module_level(ctx, ctx.binding_statement(b)) for b in module_level):
        return False
    if ctx.model is not None:
        instance_class = ctx.model.constructor.rsplit(".", 1)[-1]
        on_class = ctx.cursor_class is not None and ctx.cursor_class.name == instance_class
        return on_class or ctx.cursor_on_key(ctx.model.key)
    return ctx.cursor_class is not None and _constructible(ctx.cursor_class)


def _constructible(cls: ast.ClassDef) -> bool:
    """`Cls()` works: its __init__ takes nothing but `self` and parameters with defaults."""
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is None:
        return True
    args = init.args
    positional = args.posonlyargs + args.args
    required = len(positional) - 1 - len(args.defaults)
    kw_required = sum(1 for d in args.kw_defaults if d is None)
    return required <= 0 and kw_required == 0


def _prelude(ctx: ScaffoldContext, plan: EditPlan) -> tuple[str, dict[str, str]]:
    """Statements creating what the loop needs and the file lacks, and the names to use."""
    lines: list[str] = []
    names: dict[str, str] = {}
    if ctx.train_loader is not None:
        names["loader"] = ctx.train_loader.key
    else:
        names["loader"] = fresh_name(ctx, "train_loader")
        loader = plan.reference("torch.utils.data.DataLoader")
        lines.append(f'{names["loader"]} = {loader}({ctx.train_dataset}, batch_size=32, shuffle=True)')
    if ctx.device:
        names["device"] = ctx.device
    else:
        names["device"] = fresh_name(ctx, "device")
        torch = plan.module_reference("torch.device")
        lines.append(f'{names["device"]} = {torch}.device("cuda" if {torch}.cuda.is_available() else "cpu")')
    if ctx.model is not None:
        names["model"] = ctx.model.key
        lines.append(f'{names["model"]}.to({names["device"]})')
    else:
        names["model"] = fresh_name(ctx, "model")
        lines.append(f'{names["model"]} = {ctx.cursor_class.name}().to({names["device"]})')
    if ctx.loss is not None:
        names["criterion"] = ctx.loss.key
    else:
        names["criterion"] = fresh_name(ctx, "criterion")
        lines.append(f'{names["criterion"]} = {plan.reference("torch.nn.CrossEntropyLoss")}()')
    if ctx.optimizer is not None:
        names["optimizer"] = ctx.optimizer.key
    else:
        names["optimizer"] = fresh_name(ctx, "optimizer")
        sgd = plan.reference("torch.optim.SGD")
        lines.append(f'{names["optimizer"]} = {sgd}({names["model"]}.parameters(), lr=0.01, momentum=0.9)')
    if isinstance(ctx.epochs, ast.Name):
        names["epochs"] = ctx.epochs.id
    else:
        names["epochs"] = fresh_name(ctx, "num_epochs")
        lines.append(f'{names["epochs"]} = 10')
    return "\n".join(lines) + "\n", names


@action("loop.train", lambda ctx: f"Write a training loop for `{_model_label(ctx)}`", when=_can_write_training_loop,
        kind=SOURCE)
def write_training_loop(ctx: ScaffoldContext, plan: EditPlan) -> None:
    prelude, names = _prelude(ctx, plan)
    for local in ("epoch", "running_loss", "inputs", "labels", "outputs", "loss"):
        names[local] = fresh_name(ctx, local)
    plan.append_to_module(prelude + "\n" + render(TRAINING_LOOP, **names))


def _can_write_training_functions(ctx: ScaffoldContext) -> bool:
    return _can_write_training_loop(ctx) and not ctx.defines("train_one_epoch") and not ctx.defines("evaluate")


@action("loop.train_functions",
        lambda ctx: f"Write train_one_epoch() and evaluate() functions and an epoch loop for `{_model_label(ctx)}`",
        when=_can_write_training_functions, kind=SOURCE)
def write_training_functions(ctx: ScaffoldContext, plan: EditPlan) -> None:
    prelude, names = _prelude(ctx, plan)
    names["epoch"] = fresh_name(ctx, "epoch")
    names["val_loader"] = ctx.val_loader.key if ctx.val_loader else names["loader"]
    note = "" if ctx.val_loader else "# No validation loader in this file yet: evaluate() measures the training data.\n"
    code = (render(TRAIN_ONE_EPOCH) + "\n\n" + evaluate_function(ctx, plan, "device") + "\n\n" + prelude + "\n"
            + note + render(EPOCH_LOOP_WITH_FUNCTIONS, **names))
    plan.append_to_module(code)


# -- evaluation ----------------------------------------------------------------------------------
def _can_add_evaluation(ctx: ScaffoldContext) -> bool:
    if ctx.validation_loss is not None or ctx.calls(".eval", "torch.no_grad", "torch.inference_mode"):
        return False
    return can_validate(ctx) and (ctx.cursor_in_training_loop or ctx.cursor_on_key(ctx.model.key))


@action("loop.evaluate", lambda ctx: f"Evaluate `{ctx.model.key}` after every epoch (loss and accuracy)",
        when=_can_add_evaluation)
def add_evaluation(ctx: ScaffoldContext, plan: EditPlan) -> None:
    ensure_validation(ctx, plan)

