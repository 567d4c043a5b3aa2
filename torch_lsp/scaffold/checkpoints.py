"""Checkpoint save and resume around the epoch loop (issue 5, item 5).

`checkpoint.save_resume`: before the epoch loop, load `checkpoint.pt` if it exists (model,
optimizer, scheduler and GradScaler states, and the epoch), with `weights_only=True` so that a
checkpoint can never run code when loaded; the loop restarts at the next epoch
(`range(start_epoch, N)`); at the end of every epoch, save all of it atomically (a temporary
file, then `os.replace`), so an interrupted save never destroys the last good checkpoint.

Offered with the cursor in the training loop, or on the model or optimizer, when the epoch
loop is `for <epoch> in range(<n>)` and the file neither saves nor loads with torch yet.
"""

from __future__ import annotations

import ast

from torch_lsp.analysis.training import Kind
from torch_lsp.scaffold import action
from torch_lsp.scaffold._blocks import bound_before
from torch_lsp.scaffold.codemod import EditPlan, render
from torch_lsp.scaffold.context import ScaffoldContext
from torch_lsp.scaffold.distributed import unwrapped, uses_distributed
from torch_lsp.scaffold.templates import fresh_name

CHECKPOINT_FILE = "checkpoint.pt"

RESUME = '''
# Resume from the last completed epoch when a checkpoint exists.
$path = "$file"
$start = 0
if $os.path.exists($path):
    # weights_only=True: unpickle tensors and plain containers only, never arbitrary objects.
    # map_location="cpu": load_state_dict copies the values to wherever the model lives.
    $checkpoint = $torch.load($path, map_location="cpu", weights_only=True)
$loads    $start = $checkpoint["epoch"] + 1
    print(f"resumed from {$path}: continuing at epoch {$start + 1}")
'''

SAVE = '''
# Save after every epoch, through a temporary file: an interrupted save never corrupts the
# last good checkpoint.
$guard$torch.save(
    {
        "epoch": $epoch,
$states    },
    $path + ".tmp",
)
$os.replace($path + ".tmp", $path)
'''


def _epoch_range(ctx: ScaffoldContext) -> ast.Call | None:
    """The `range(n)` call of `for <name> in range(n)`, the epoch loop."""
    loop = ctx.training_loop.epoch if ctx.training_loop else None
    if isinstance(loop, ast.For) and isinstance(loop.target, ast.Name) and isinstance(loop.iter, ast.Call) \
            and isinstance(loop.iter.func, ast.Name) and loop.iter.func.id == "range" and len(loop.iter.args) == 1 \
            and not loop.iter.keywords:
        return loop.iter
    return None


def _can_checkpoint(ctx: ScaffoldContext) -> bool:
    if ctx.model is None or ctx.optimizer is None or _epoch_range(ctx) is None:
        return False
    if ctx.calls("torch.save", "torch.load") or ctx.defines("checkpoint_path") or ctx.defines("start_epoch"):
        return False
    return ctx.cursor_in_training_loop or ctx.cursor_on_key(ctx.model.key) or ctx.cursor_on_key(ctx.optimizer.key)


def _states(ctx: ScaffoldContext, plan: EditPlan, epoch_loop: ast.stmt) -> dict[str, str]:
    """Checkpoint key -> the variable whose state_dict it holds (what exists before the loop)."""
    states = {"model": ctx.model.key, "optimizer": ctx.optimizer.key}
    if ctx.scheduler is not None and bound_before(plan, ctx.scheduler.key, epoch_loop):
        states["scheduler"] = ctx.scheduler.key
    scalers = [b for b in ctx.bindings_of(Kind.SCALER) if bound_before(plan, b.key, epoch_loop)]
    if scalers:
        states["scaler"] = scalers[-1].key
    return states


@action("checkpoint.save_resume", "Save a checkpoint every epoch and resume from it (weights_only load)",
        when=_can_checkpoint)
def add_checkpoints(ctx: ScaffoldContext, plan: EditPlan) -> None:
    loop = ctx.training_loop.epoch
    epochs = _epoch_range(ctx)
    names = {"path": fresh_name(ctx, "checkpoint_path"), "start": fresh_name(ctx, "start_epoch"),
             "checkpoint": fresh_name(ctx, "checkpoint"), "file": CHECKPOINT_FILE, "epoch": ctx.epoch_variable,
             "torch": plan.module_reference("torch.load"), "os": plan.module_reference("os.replace")}
    states = _states(ctx, plan, loop)
    distributed = uses_distributed(ctx)
    if distributed:
        # Save the model inside the DDP wrapper (loadable with or without torchrun), from rank 0
        # only: several processes writing one file corrupt it.
        states["model"] = unwrapped(states["model"])
        get_rank = plan.reference("torch.distributed.get_rank", "torch.distributed")
        is_initialized = get_rank.rsplit(".", 1)[0] + ".is_initialized"
        names["guard"] = f"if not {is_initialized}() or {get_rank}() == 0:\n"
    else:
        names["guard"] = ""
    names["loads"] = "".join(f'    {variable}.load_state_dict({names["checkpoint"]}["{key}"])\n'
                             for key, variable in states.items())
    names["states"] = "".join(f'        "{key}": {variable}.state_dict(),\n' for key, variable in states.items())
    plan.insert_before(loop, render(RESUME, **names) + "\n", above_comments=True)
    plan.replace_node(epochs.args[0], f"{names['start']}, {ctx.parsed.code(epochs.args[0])}")
    save = render(SAVE, **names)
    if distributed:  # the statements after the guard line go one level deeper
        head, guard, body = save.partition(names["guard"])
        save = head + guard + "".join(plan.unit + line if line.strip() else line for line in body.splitlines(True))
    plan.insert_at_body_end(loop, save)
