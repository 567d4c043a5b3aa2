"""DistributedDataParallel, ready for torchrun (issue 5, item 5).

`distributed.ddp` turns a single-process training script into one that runs unchanged with
`python train.py` (one process) and with `torchrun --nproc_per_node N train.py`:

- `setup_distributed()` joins the process group torchrun describes (RANK, WORLD_SIZE,
  LOCAL_RANK in the environment; NCCL on GPUs, gloo on CPUs) and returns rank, world size and
  this process's device (replacing the file's own device variable);
- the training loader reads through a `DistributedSampler` (each process sees its own shard;
  `set_epoch` at the top of each epoch reshuffles differently every epoch);
- the model is wrapped in `DistributedDataParallel` after it is on its device, so backward()
  averages gradients across processes and every replica stays identical;
- `print` in the training code runs on rank 0 only;
- everything runs from a `main()` under `if __name__ == "__main__":` (a script's top-level
  training code moves into one; an existing training function is edited in place), ending
  with `destroy_process_group()`; what DDP leaves in reference cycles is collected before the
  interpreter shuts down (otherwise gloo aborted a rank at exit, "terminate called without an
  active exception", in 5 of 20 two-process runs on two busy cores; none in 20 with it).

Offered with the cursor in the training loop or on the model, when the file has no
distributed code yet and its training code (model, optimizer, loader, loop) lives at module
level or in one function.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import libcst as cst

from torch_lsp.analysis.facts import Position, Span, TextEdit
from torch_lsp.analysis.syntax import target_key
from torch_lsp.scaffold import action
from torch_lsp.scaffold._blocks import first_line, lines_span
from torch_lsp.scaffold.codemod import (CannotEdit, EditPlan, _is_main_guard, _string_continuation_lines,
                                        apply_text_edits, reindent, render)
from torch_lsp.scaffold.context import ScaffoldContext
from torch_lsp.scaffold.templates import fresh_name

_DISTRIBUTED = ("torch.distributed.", "torch.nn.parallel.DistributedDataParallel",
                "torch.utils.data.distributed.DistributedSampler", "torch.utils.data.DistributedSampler")

SETUP = '''
def setup_distributed(use_cuda: bool = $torch.cuda.is_available()) -> tuple[int, int, $torch.device]:
    """Join the process group that torchrun describes in the environment (RANK, WORLD_SIZE,
    LOCAL_RANK) and return (rank, world_size, device). A plain `python` run is rank 0 of 1."""
    if "RANK" not in $os.environ:
        return 0, 1, $torch.device("cuda" if use_cuda else "cpu")
    local_rank = int($os.environ["LOCAL_RANK"])
    if use_cuda:
        $torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    # DistributedDataParallel sits in reference cycles and holds the process group: collected
    # while the interpreter shuts down, it can abort the process as it exits.
    $atexit.register($gc.collect)
    device = $torch.device("cuda", local_rank) if use_cuda else $torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
'''

WRAP_MODEL = '''
if $world_size > 1:
    # One replica per process; backward() averages the gradients across processes.
    $model = DistributedDataParallel($model, device_ids=[$device.index] if $device.type == "cuda" else None)
'''


@dataclass
class _Layout:
    """Where the training code lives and what must change in it."""

    scope: ast.AST  # the module (a script) or the training function
    statements: list[ast.stmt]  # statements of the training code, in order (moved into main() for a script)
    device_statement: ast.stmt | None  # the file's own `device = ...`, replaced by setup_distributed()


def uses_distributed(ctx: ScaffoldContext) -> bool:
    return any(name.startswith(_DISTRIBUTED) or name in _DISTRIBUTED for name in ctx.called) or any(
        target.startswith(_DISTRIBUTED) or target in _DISTRIBUTED for target in ctx.parsed.imports.values())


def _loader_call(ctx: ScaffoldContext) -> ast.Call | None:
    loader = ctx.train_loader
    found = ctx.facts.classify(loader.value) if loader is not None else None
    call = found[2] if found else None
    if call is None or any(k.arg in ("sampler", "batch_sampler") for k in call.keywords):
        return None
    return call


def _layout(ctx: ScaffoldContext) -> _Layout | None:
    loop = ctx.training_loop
    if loop is None or ctx.model is None or ctx.optimizer is None or _loader_call(ctx) is None:
        return None
    outer = loop.epoch or loop.batch.node
    function = ctx.parsed.enclosing(outer, (ast.FunctionDef, ast.AsyncFunctionDef))
    if function is None:
        layout = _script_layout(ctx)
        needed = [ctx.binding_statement(ctx.model), ctx.binding_statement(ctx.train_loader), outer]
        if layout is None or any(statement not in layout.statements for statement in needed):
            return None  # e.g. the model stays global because a helper function reads it
        return layout
    if ctx.parsed.parent(function) is not ctx.parsed.tree or not _called_under_main_guard(ctx, function.name):
        return None
    needed = [ctx.binding_statement(ctx.model), ctx.binding_statement(ctx.train_loader), outer]
    if any(statement is None or ctx.parsed.parent(statement) is not function for statement in needed):
        return None
    return _Layout(function, list(function.body), _device_statement(ctx, function.body))


def _script_layout(ctx: ScaffoldContext) -> _Layout | None:
    """Top-level training code of a script: the statements main() will hold. None when a
    function or class of the file reads one of their names (it could not see them any more)."""
    body = ctx.parsed.tree.body
    if any(_is_main_guard(node) for node in body):
        return None
    definitions = [n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    read_by_definitions = set().union(*(_free_names(d) for d in definitions))
    if ctx.device in read_by_definitions:
        return None  # a helper using the global device would not follow each process's device
    moved: list[ast.stmt] = []
    for index, node in enumerate(body):
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        bound = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        if bound & read_by_definitions:
            # A constant the classes use (NUM_CLASSES) stays global, if it needs nothing moved.
            if not isinstance(node, (ast.Assign, ast.AnnAssign)) or _reads(node) & _bound_by(moved):
                return None
            continue
        moved.append(node)
    if not moved or moved[-1] is not body[-1]:
        return None  # main() and its guard go last: nothing may follow the training code
    return _Layout(ctx.parsed.tree, moved, _device_statement(ctx, moved))


def _free_names(definition: ast.AST) -> set[str]:
    """Global names a function or class reads (its own parameters and locals excluded)."""
    if isinstance(definition, ast.ClassDef):
        outside = [*definition.bases, *definition.keywords, *definition.decorator_list]
        return set().union(_reads_all(outside), *(_free_names(s) if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
                                                    else _reads(s) for s in definition.body))
    if isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = definition.args
        outside = [*args.defaults, *(d for d in args.kw_defaults if d is not None), *definition.decorator_list]
        params = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg] if a}
        local = params | _bound_by(definition.body)
        return _reads_all(outside) | {name for name in _reads_all(definition.body) if name not in local}
    return _reads(definition)


def _reads_all(nodes) -> set[str]:
    return set().union(*(_reads(n) for n in nodes)) if nodes else set()


def _reads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _bound_by(statements: list[ast.stmt]) -> set[str]:
    return {n.id for s in statements for n in ast.walk(s) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _device_statement(ctx: ScaffoldContext, statements: list[ast.stmt]) -> ast.stmt | None:
    for statement in statements:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                and target_key(statement.targets[0]) == ctx.device:
            return statement
    return None


def _called_under_main_guard(ctx: ScaffoldContext, name: str) -> bool:
    return any(_is_main_guard(node) and any(isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                                            and c.func.id == name for c in ast.walk(node))
               for node in ctx.parsed.tree.body)


def unwrapped(model: str) -> str:
    """The module inside a DistributedDataParallel / DataParallel wrapper, or the model itself."""
    return f'getattr({model}, "module", {model})'


def _can_distribute(ctx: ScaffoldContext) -> bool:
    if uses_distributed(ctx) or ctx.defines("setup_distributed") or ctx.defines("main") and not _main_trains(ctx):
        return False
    if not (ctx.cursor_in_training_loop or ctx.cursor_on_key(ctx.model.key if ctx.model else None)):
        return False
    return _layout(ctx) is not None


def _main_trains(ctx: ScaffoldContext) -> bool:
    loop = ctx.training_loop
    function = ctx.parsed.enclosing(loop.batch.node, ast.FunctionDef) if loop else None
    return function is not None and function.name == "main"


# -- the edits inside the training code ------------------------------------------------------------
class _Edits:
    """Line-based edits on the training code, in original coordinates (applied to the file in
    place, or to the text that moves into main())."""

    def __init__(self, plan: EditPlan):
        self.plan = plan
        self.parsed = plan.parsed
        self.edits: list[TextEdit] = []

    def before(self, statement: ast.stmt, code: str) -> None:
        at = Position(first_line(statement) - 1, 0)
        self.edits.append(TextEdit(Span(at, at), reindent(code, self.parsed.indent_of(statement), self.plan.unit)))

    def after(self, statement: ast.stmt, code: str) -> None:
        at = lines_span(self.plan, statement).end
        self.edits.append(TextEdit(Span(at, at), reindent(code, self.parsed.indent_of(statement), self.plan.unit)))

    def delete(self, statement: ast.stmt) -> None:
        self.edits.append(TextEdit(lines_span(self.plan, statement), ""))

    def replace(self, node: ast.AST, text: str) -> None:
        self.edits.append(TextEdit(self.parsed.span(node), text))

    def merged(self) -> list[TextEdit]:
        """One edit per range: insertions at one place keep the order they were planned in (LSP
        clients apply same-position inserts in array order, but not every helper does)."""
        merged: dict[Span, str] = {}
        for edit in self.edits:
            merged[edit.span] = merged.get(edit.span, "") + edit.new_text
        return [TextEdit(span, text) for span, text in merged.items()]

    def under(self, statements: list[ast.stmt], header: str) -> None:
        """Consecutive `statements` one level deeper under `<header>:`. Written as insertions
        (the header line, one indent unit at the start of each line) so that replacements
        inside those statements still apply."""
        first, last = statements[0], statements[-1]
        lines_span(self.plan, first), lines_span(self.plan, last)  # both must own their lines
        keep = _string_continuation_lines(self.parsed.source)
        start = Position(first_line(first) - 1, 0)
        self.edits.append(TextEdit(Span(start, start), f"{self.parsed.indent_of(first)}{header}:\n"))
        for number in range(first_line(first), last.end_lineno + 1):
            if number not in keep and self.parsed.line_text(number - 1).strip():
                at = Position(number - 1, 0)
                self.edits.append(TextEdit(Span(at, at), self.plan.unit))


def _plan_training_edits(ctx: ScaffoldContext, plan: EditPlan, layout: _Layout, names: dict[str, str]) -> _Edits:
    edits = _Edits(plan)
    loader = _loader_call(ctx)
    loader_statement = ctx.binding_statement(ctx.train_loader)
    dataset = loader.args[0] if loader.args else next(k.value for k in loader.keywords if k.arg == "dataset")
    shuffle = next((k.value for k in loader.keywords if k.arg == "shuffle"), None)
    dataset_code = ctx.parsed.code(dataset)
    if not isinstance(dataset, (ast.Name, ast.Attribute)):
        # The sampler and the loader must share one dataset object: name it first.
        dataset_code = fresh_name(ctx, "train_dataset")
        edits.before(loader_statement, f"{dataset_code} = {ctx.parsed.code(dataset)}\n")
        edits.replace(dataset, dataset_code)
    shuffle_code = ctx.parsed.code(shuffle) if shuffle is not None else "False"
    edits.before(loader_statement, f"# Each process reads its own shard of the data.\n"
                                   f"{names['sampler']} = DistributedSampler({dataset_code}, num_replicas={names['world_size']}, "
                                   f"rank={names['rank']}, shuffle={shuffle_code})\n")
    if dataset_code == ctx.parsed.code(dataset):
        edits.replace(loader, _loader_with_sampler(ctx.parsed.code(loader), names["sampler"]))
    else:
        # The dataset argument is being renamed too: rewrite the call's text with that in it.
        call_text = apply_text_edits(ctx.parsed.code(loader), [TextEdit(_relative(ctx, dataset, loader), dataset_code)])
        edits.edits = [e for e in edits.edits if e.span != ctx.parsed.span(dataset)]
        edits.replace(loader, _loader_with_sampler(call_text, names["sampler"]))

    model_ready = _model_ready_statement(ctx, layout)
    edits.after(model_ready, render(WRAP_MODEL, model=ctx.model.key, **names))
    if layout.device_statement is not None:
        edits.delete(layout.device_statement)

    epoch = ctx.training_loop.epoch
    if isinstance(epoch, ast.For) and isinstance(epoch.target, ast.Name):
        edits.before(epoch.body[0], f"{names['sampler']}.set_epoch({epoch.target.id})  # a different shuffle every epoch\n")
    # Checkpoints hold the model itself, not the wrapper: loadable with and without torchrun.
    for statement in layout.statements:
        for call in ast.walk(statement):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) \
                    and call.func.attr in ("state_dict", "load_state_dict") and target_key(call.func.value) == ctx.model.key:
                edits.replace(call.func.value, unwrapped(ctx.model.key))
    for statement in layout.statements:
        for run in _rank_zero_runs(ctx, statement):
            edits.under(run, f"if {names['rank']} == 0")
    return edits


_RANK_ZERO_CALLS = ("print", "torch.save", "os.replace", "os.rename", "shutil.move")


def _rank_zero_runs(ctx: ScaffoldContext, statement: ast.stmt) -> list[list[ast.stmt]]:
    """Runs of consecutive statements in `statement` (itself included) that print or write
    files: rank 0 alone does those (two processes writing one checkpoint corrupt it). Not
    inside nested functions or classes."""
    runs: list[list[ast.stmt]] = []
    blocks = [[statement]]
    while blocks:
        block = blocks.pop()
        run: list[ast.stmt] = []
        for node in block:
            if _is_rank_zero_call(ctx, node):
                run.append(node)
                continue
            if run:
                runs.append(run)
                run = []
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                blocks.extend(getattr(node, name) for name in ("body", "orelse", "finalbody")
                              if isinstance(getattr(node, name, None), list))
        if run:
            runs.append(run)
    return runs


def _is_rank_zero_call(ctx: ScaffoldContext, node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and (
        ctx.parsed.resolves_to(node.value.func, *_RANK_ZERO_CALLS))


def _model_ready_statement(ctx: ScaffoldContext, layout: _Layout) -> ast.stmt:
    """The last statement that builds the model or moves it (`model.to(device)`) before the loop."""
    model_statement = ctx.binding_statement(ctx.model)
    ready = model_statement
    for statement in layout.statements:
        if statement.lineno > model_statement.lineno and isinstance(statement, ast.Expr) \
                and isinstance(statement.value, ast.Call) and isinstance(statement.value.func, ast.Attribute) \
                and statement.value.func.attr in ("to", "cuda") and target_key(statement.value.func.value) == ctx.model.key:
            ready = statement
    if ctx.parsed.parent(ready) is not layout.scope:
        raise CannotEdit("the model is built inside a block")
    return ready


def _relative(ctx: ScaffoldContext, node: ast.AST, container: ast.AST) -> Span:
    """`node`'s span relative to the start of `container`'s text."""
    span, origin = ctx.parsed.span(node), ctx.parsed.span(container).start

    def shift(pos: Position) -> Position:
        return Position(pos.line - origin.line, pos.col - origin.col if pos.line == origin.line else pos.col)

    return Span(shift(span.start), shift(span.end))


def _loader_with_sampler(call_text: str, sampler: str) -> str:
    """The DataLoader call without `shuffle=` (the sampler shuffles) and with `sampler=`."""
    tree = cst.parse_expression(call_text)
    args = [a for a in tree.args if not (a.keyword is not None and a.keyword.value == "shuffle")]
    if args and len(args) < len(tree.args) and args[-1].comma is not cst.MaybeSentinel.DEFAULT \
            and tree.args[-1].comma is cst.MaybeSentinel.DEFAULT:
        args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    tree = tree.with_changes(args=args)
    from torch_lsp.scaffold.codemod import _with_keyword

    return cst.Module([]).code_for_node(_with_keyword(tree, "sampler", cst.Name(sampler)))


# -- the action ------------------------------------------------------------------------------------
@action("distributed.ddp", "Train with DistributedDataParallel (torchrun-ready main(), DistributedSampler)",
        when=_can_distribute)
def add_distributed(ctx: ScaffoldContext, plan: EditPlan) -> None:
    layout = _layout(ctx)
    plan.add_import("import torch.distributed as dist")
    plan.add_import("from torch.nn.parallel import DistributedDataParallel")
    plan.add_import("from torch.utils.data.distributed import DistributedSampler")
    torch, os_name, atexit, gc = (plan.module_reference(qualified) for qualified in
                                  ("torch.device", "os.environ", "atexit.register", "gc.collect"))
    names = {"rank": fresh_name(ctx, "rank"), "world_size": fresh_name(ctx, "world_size"),
             "sampler": fresh_name(ctx, "train_sampler"), "device": ctx.device or fresh_name(ctx, "device")}
    # Without a device variable the file keeps its tensors on the CPU: so must the processes.
    setup_call = (f"{names['rank']}, {names['world_size']}, {names['device']} = setup_distributed("
                  f"{'' if ctx.device else 'use_cuda=False'})\n")
    edits = _plan_training_edits(ctx, plan, layout, names)
    setup = render(SETUP, torch=torch, os=os_name, atexit=atexit, gc=gc)

    if isinstance(layout.scope, ast.Module):
        _move_into_main(ctx, plan, layout, edits, setup + "\n\n", setup_call)
        return
    function = layout.scope
    plan.insert_before(function, setup + "\n\n", above_comments=True)
    for edit in edits.merged():
        plan.replace_span(edit.span, edit.new_text)
    plan.insert_at_body_start(function, setup_call)
    plan.insert_after(function.body[-1], "cleanup_distributed()\n")


def _move_into_main(ctx: ScaffoldContext, plan: EditPlan, layout: _Layout, edits: _Edits, setup: str,
                    setup_call: str) -> None:
    """Delete the script's training statements where they are (with the blank lines before
    them) and write them, edited and one level deeper, into `main()` at the end of the file."""
    chunks: list[str] = []
    previous_end = None
    pending = edits.merged()
    spans: list[Span] = []
    for statement in layout.statements:
        start = _chunk_start(ctx, statement)
        span = Span(Position(start - 1, 0), lines_span(plan, statement).end)
        inside = [e for e in pending if span.start <= e.span.start and e.span.end <= span.end]
        pending = [e for e in pending if e not in inside]
        text = _edited_text(ctx, span, inside)
        if text.strip() and previous_end is not None and any(
                not ctx.parsed.line_text(n - 1).strip() for n in range(previous_end + 1, start)):
            chunks.append("\n")
        chunks.append(_indent(text, plan.unit))
        blank_above = start
        while blank_above > 1 and not ctx.parsed.line_text(blank_above - 2).strip():
            blank_above -= 1
        spans.append(Span(Position(blank_above - 1, 0), span.end))
        if text.strip():
            previous_end = statement.end_lineno
    if pending:
        raise CannotEdit("an edit falls outside the training code")
    main = ("def main():\n" + plan.unit + setup_call + "".join(chunks) + plan.unit + "cleanup_distributed()\n\n\n"
            'if __name__ == "__main__":\n' + plan.unit + "main()\n")
    for span in spans[:-1]:
        plan.replace_span(span, "")
    plan.replace_span(spans[-1], "\n\n" + setup + main)


def _chunk_start(ctx: ScaffoldContext, statement: ast.stmt) -> int:
    """First line of `statement` with the comment lines right above it (they move with it)."""
    line = first_line(statement)
    while line > 1 and ctx.parsed.line_text(line - 2).lstrip().startswith("#"):
        line -= 1
    return line


def _edited_text(ctx: ScaffoldContext, span: Span, edits: list[TextEdit]) -> str:
    lines = ctx.parsed.source.splitlines(keepends=True)[span.start.line:span.end.line]
    text = "".join(lines)
    shift = span.start.line
    moved = [TextEdit(Span(Position(e.span.start.line - shift, e.span.start.col),
                           Position(e.span.end.line - shift, e.span.end.col)), e.new_text) for e in edits]
    return apply_text_edits(text, moved)


def _indent(text: str, unit: str) -> str:
    keep = _string_continuation_lines(text)
    return "".join(line if (number in keep or not line.strip()) else unit + line
                   for number, line in enumerate(text.splitlines(keepends=True), start=1))
