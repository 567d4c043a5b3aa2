"""Pieces of training code that several actions write, fitted to the file and planned once.

An action that needs a validation loss (ReduceLROnPlateau, early stopping) calls
`ensure_validation`, which returns the existing one or plans the `evaluate` function and its
call; an action that needs the number of epochs calls `epochs_text`. Each piece is planned at
most once per build (`plan.notes`), so actions compose without duplicating code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from torch_lsp.scaffold.codemod import CannotEdit, EditPlan, render
from torch_lsp.scaffold.context import ScaffoldContext

EVALUATE_FUNCTION = '''
def evaluate(model, loader, criterion$device_param):
    """Average loss and accuracy of `model` over `loader`, without building autograd graphs."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with $no_grad():
        for inputs, labels in loader:
$to_device            outputs = model(inputs)
            total_loss += criterion(outputs, labels).item() * labels.size(0)
            correct += (outputs.argmax(dim=1) == labels).sum().item()
            seen += labels.size(0)
    model.train()
    return total_loss / max(seen, 1), correct / max(seen, 1)
'''

TO_DEVICE = "            inputs, labels = inputs.to(device), labels.to(device)\n"


def fresh_name(ctx: ScaffoldContext, base: str) -> str:
    """`base`, or `base_2`, ... when the file already binds that name."""
    name, counter = base, 1
    while ctx.defines(name):
        counter += 1
        name = f"{base}_{counter}"
    return name


def top_level_statement(ctx: ScaffoldContext, node: ast.AST) -> ast.stmt:
    """The module-level statement that contains `node`."""
    current = node
    while ctx.parsed.parent(current) is not ctx.parsed.tree:
        current = ctx.parsed.parent(current)
        if current is None:
            raise CannotEdit("node outside the module")
    return current


def defined_at_module_level(ctx: ScaffoldContext, statement: ast.stmt | None) -> bool:
    return statement is not None and ctx.parsed.parent(statement) is ctx.parsed.tree


def evaluate_function(ctx: ScaffoldContext, plan: EditPlan, device: str | None) -> str:
    """The text of a module-level `evaluate(model, loader, criterion[, device])` function."""
    return render(EVALUATE_FUNCTION, device_param=f", {device}" if device else "",
                  no_grad=plan.reference("torch.no_grad"), to_device=TO_DEVICE.replace("device", device) if device else "")


def loss_function(ctx: ScaffoldContext) -> str | None:
    """How the training loop computes its loss: the loss module's variable (`criterion`), or a
    functional loss it calls directly (`F.cross_entropy`)."""
    if ctx.loss is not None:
        return ctx.loss.key
    statement = ctx.training_loop.loss_statement if ctx.training_loop else None
    if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Call) and \
            ctx.parsed.resolves_to(statement.value.func, "torch.nn.functional."):
        return ctx.parsed.code(statement.value.func)
    return None


def can_validate(ctx: ScaffoldContext) -> bool:
    """`ensure_validation` will succeed: a validation loss exists or `evaluate` can be written."""
    if ctx.validation_loss is not None:
        return True
    loop = ctx.training_loop
    return (loop is not None and loop.epoch is not None and ctx.model is not None and loss_function(ctx) is not None
            and (ctx.val_loader or ctx.training_batches) is not None and not ctx.defines("evaluate"))


def evaluate_call(ctx: ScaffoldContext, model: str, loader: str | None, device: str | None) -> str:
    """`val_loss, val_accuracy = evaluate(...)` and a report line, for the end of an epoch."""
    comment = ""
    if loader is None:
        loader = ctx.training_batches
        comment = "# No validation loader in this file yet: this measures the training data.\n"
    loss = loss_function(ctx)
    epoch = ctx.epoch_variable
    prefix = f"epoch {{{epoch} + 1}}: " if epoch else ""
    args = ", ".join([model, loader, loss, *([device] if device else [])])
    return (f"{comment}val_loss, val_accuracy = evaluate({args})\n"
            f'print(f"{prefix}val loss {{val_loss:.4f}}, val accuracy {{val_accuracy:.2%}}")\n')


def ensure_validation(ctx: ScaffoldContext, plan: EditPlan) -> str:
    """The name of the epoch's validation loss; plans `evaluate` and its call when absent.

    Code that uses the value must be inserted at the end of the epoch loop *after* this call
    (insertions at one place keep the order in which they were planned).
    """
    if "validation" in plan.notes:
        return plan.notes["validation"]
    if ctx.validation_loss is not None:
        name, _ = ctx.validation_loss
    else:
        if not can_validate(ctx):
            raise CannotEdit("no epoch loop, model or loss to validate with")
        loop = ctx.training_loop
        plan.insert_definition_before(top_level_statement(ctx, loop.epoch), evaluate_function(ctx, plan, ctx.device))
        plan.insert_at_body_end(loop.epoch, evaluate_call(ctx, ctx.model.key, _key(ctx.val_loader), ctx.device))
        name = "val_loss"
    plan.notes["validation"] = name
    return name


def validation_point(ctx: ScaffoldContext, plan: EditPlan) -> tuple[str, ast.stmt, bool]:
    """(validation loss name, statement, insert-after-it?) where code that uses it goes."""
    name = ensure_validation(ctx, plan)
    if ctx.validation_loss is not None:
        return name, ctx.validation_loss[1], True
    return name, ctx.training_loop.epoch, False


def insert_after_validation(ctx: ScaffoldContext, plan: EditPlan, code: str) -> None:
    _, statement, after = validation_point(ctx, plan)
    if after:
        plan.insert_after(statement, code)
    else:
        plan.insert_at_body_end(statement, code)


@dataclass(frozen=True)
class Anchor:
    """Where new setup code goes: just after a statement (the optimizer), or just before one
    (the epoch loop)."""

    statement: ast.stmt
    after: bool = True

    def insert(self, plan: EditPlan, code: str) -> None:
        if self.after:
            plan.insert_after(self.statement, code)
        else:
            plan.insert_before(self.statement, code)

    def sees(self, ctx: ScaffoldContext, name: str) -> bool:
        """`name` is bound before this point (names bound nowhere are imports or builtins)."""
        line = ctx.first_binding_line(name)
        limit = (self.statement.end_lineno or self.statement.lineno) if self.after else self.statement.lineno - 1
        return line is None or line <= limit


def setup_anchor(ctx: ScaffoldContext, statement: ast.stmt, *uses: ast.AST | str | None) -> Anchor:
    """Just after `statement`, unless something the new code uses is bound later than it:
    then just before the training loop, where everything it uses exists."""
    anchor = Anchor(statement)
    names = [u for u in uses if isinstance(u, str)]
    names += [n.id for u in uses if isinstance(u, ast.AST) for n in ast.walk(u) if isinstance(n, ast.Name)]
    if all(anchor.sees(ctx, name) for name in names):
        return anchor
    loop = ctx.training_loop
    return Anchor(loop.epoch or loop.batch.node, after=False)


def epochs_text(ctx: ScaffoldContext, plan: EditPlan, anchor: Anchor) -> str:
    """Code for the number of epochs that is valid at `anchor`.

    A literal or a variable bound earlier is used as is; an expression in the epoch loop's
    `range(...)` is hoisted into `num_epochs = ...` (planned at `anchor`) and the loop header is
    changed to use it, so the schedule and the loop cannot disagree.
    """
    if "epochs" in plan.notes:
        return plan.notes["epochs"]
    epochs = ctx.epochs
    if epochs is None:
        raise CannotEdit("unknown number of epochs")
    if isinstance(epochs, ast.Constant) and isinstance(epochs.value, int):
        text = str(epochs.value)
    elif isinstance(epochs, ast.Name) and anchor.sees(ctx, epochs.id):
        text = epochs.id
    elif ctx.training_loop.epoch is not None and ctx.parsed.parent(epochs) is getattr(ctx.training_loop.epoch, "iter", None):
        text = fresh_name(ctx, "num_epochs")
        anchor.insert(plan, f"{text} = {ctx.parsed.code(epochs)}\n")
        plan.replace_node(epochs, text)
    else:
        raise CannotEdit("the number of epochs is bound after the optimizer")
    plan.notes["epochs"] = text
    return text


def literal_int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _key(binding) -> str | None:
    return binding.key if binding is not None else None
