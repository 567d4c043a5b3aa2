"""DataLoader settings that quietly hurt training (TL111)."""

from __future__ import annotations

import ast
import re

from torch_lsp.analysis.facts import Fix, Severity
from torch_lsp.analysis.file_facts import file_facts
from torch_lsp.analysis.modules import reaching_value
from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.rules import REGISTRY, RuleContext, rule
from torch_lsp.analysis.rules._edits import add_keyword_argument
from torch_lsp.analysis.syntax import ParsedModule, target_key
from torch_lsp.analysis.training import EventKind

_DATALOADER = ("torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader")
_ITERABLE_DATASETS = ("torch.utils.data.IterableDataset", "torch.utils.data.dataset.IterableDataset",
                      "torch.utils.data.IterDataPipe", "torchdata.")
_EVAL_WORDS = re.compile(r"(^|[^a-z])(val|valid|validation|test|testing|eval|evaluation|dev|holdout|infer|inference|predict)"
                         r"($|[^a-z])|(val|test|eval)(set|loader|data|dl|ds)", re.IGNORECASE)
_TRAIN_WORDS = re.compile(r"(^|[^a-z])train", re.IGNORECASE)
# Wrappers that iterate the loader they are given: for x in tqdm(loader), enumerate(loader).
_ITERATION_WRAPPERS = {"enumerate", "tqdm", "tqdm.tqdm", "tqdm.auto.tqdm", "tqdm.notebook.tqdm", "iter", "zip"}


@rule("TL111", "train-loader-not-shuffled", Severity.INFO,
      "A training DataLoader is built without shuffle=True.", fixable=True, scope="statement")
def train_loader_not_shuffled(ctx: RuleContext):
    """
    ## What it does
    Finds `DataLoader(...)` calls without a `shuffle` argument (so `shuffle=False`) whose
    loader is used for training: it is iterated by a loop that calls `.backward()` and steps
    an optimizer, or its name or dataset says *train* (`train_loader`, `trainset`,
    `CIFAR10(train=True)`, `split="train"`).

    ## Why is this bad?
    Datasets are usually stored in order (by class, by time of collection). Without shuffling,
    every epoch shows the same batches in the same order, so the batches are correlated and
    SGD learns a worse model; with class-sorted data it can fail to learn at all.

    Not reported: loaders whose name or dataset says validation/test/eval, loaders with a
    `sampler=` or `batch_sampler=` (they decide the order; `DistributedSampler` shuffles),
    iterable-style datasets (they cannot be shuffled by the loader), calls passing
    `**kwargs`, and an explicit `shuffle=False` (a deliberate choice, e.g. for time series).

    ## Example
    ```python
    train_loader = DataLoader(train_set, batch_size=64)
    ```

    ## Use instead
    ```python
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    ```

    ## Fix
    Adds `shuffle=True`. Suppress with `# torch-lsp: ignore[TL111]`.
    """
    this = REGISTRY["TL111"]
    parsed = ctx.parsed
    training_iterables = _iterables_of_training_loops(ctx)
    for call in nodes(parsed, ast.Call):
        if not parsed.resolves_to(call.func, *_DATALOADER) or not _order_left_to_default(call):
            continue
        dataset = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "dataset"), None)
        if dataset is not None and _is_iterable_dataset(ctx, dataset):
            continue
        role = _role(ctx, call, dataset, training_iterables)
        if role != "train":
            continue
        fix = Fix("Add `shuffle=True`", (add_keyword_argument(parsed, call, "shuffle=True"),))
        yield this.finding(parsed.span(call.func), "this training DataLoader does not shuffle: every epoch sees the "
                           "batches in the same order; pass `shuffle=True`", fix)


def _order_left_to_default(call: ast.Call) -> bool:
    """No shuffle, sampler or batch_sampler given, positionally or by keyword, nor **kwargs."""
    names = {k.arg for k in call.keywords}
    if None in names or names & {"shuffle", "sampler", "batch_sampler"}:
        return False
    return len(call.args) < 3 and not any(isinstance(a, ast.Starred) for a in call.args)


def _role(ctx: RuleContext, call: ast.Call, dataset: ast.AST | None, training_iterables: set[ast.AST]) -> str | None:
    """'train', 'eval' or None (unknown) for the loader built by `call`."""
    names = [n for n in (_loader_name(ctx, call), *_dataset_descriptions(ctx, dataset)) if n]
    if any(_EVAL_WORDS.search(n) for n in names):
        return "eval"
    if dataset is not None and _dataset_flag(ctx, dataset) == "eval":
        return "eval"
    if call in training_iterables or any(_TRAIN_WORDS.search(n) for n in names):
        return "train"
    if dataset is not None and _dataset_flag(ctx, dataset) == "train":
        return "train"
    return None


def _loader_name(ctx: RuleContext, call: ast.Call) -> str | None:
    parent = ctx.parsed.parent(call)
    if isinstance(parent, (ast.Assign, ast.AnnAssign)):
        targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
        return target_key(targets[0]) if len(targets) == 1 else None
    if isinstance(parent, ast.keyword):
        return parent.arg
    if isinstance(parent, ast.Return):
        function = ctx.parsed.enclosing(parent, (ast.FunctionDef, ast.AsyncFunctionDef))
        return function.name if function else None
    return None


def _dataset_descriptions(ctx: RuleContext, dataset: ast.AST | None) -> list[str]:
    """Names that describe the dataset: its variable and the helper that built it."""
    if dataset is None:
        return []
    found = [ctx.parsed.code(dataset)] if isinstance(dataset, (ast.Name, ast.Attribute)) else []
    value = _value_of(ctx, dataset)
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in ctx.training.functions:
        found.append(value.func.id)
    return found


def _dataset_flag(ctx: RuleContext, dataset: ast.AST) -> str | None:
    """`CIFAR10(train=False)` / `split="val"`: what the dataset constructor says it holds."""
    value = _value_of(ctx, dataset)
    if not isinstance(value, ast.Call):
        return None
    for keyword in value.keywords:
        if not isinstance(keyword.value, ast.Constant):
            continue
        if keyword.arg == "train" and isinstance(keyword.value.value, bool):
            return "train" if keyword.value.value else "eval"
        if keyword.arg in ("split", "image_set", "subset") and isinstance(keyword.value.value, str):
            return "eval" if _EVAL_WORDS.search(keyword.value.value) else (
                "train" if _TRAIN_WORDS.search(keyword.value.value) else None)
    return None


def _value_of(ctx: RuleContext, expr: ast.AST) -> ast.AST | None:
    if isinstance(expr, ast.Name):
        return reaching_value(ctx.parsed, expr)
    return expr


def _is_iterable_dataset(ctx: RuleContext, dataset: ast.AST) -> bool:
    value = _value_of(ctx, dataset)
    if not isinstance(value, ast.Call):
        return False
    qualified = ctx.parsed.qualified_name(value.func) or ""
    if qualified.startswith(_ITERABLE_DATASETS):
        return True
    classes = _classes_by_name(ctx.whole)
    seen: set[str] = set()
    pending = [qualified]
    while pending:  # local classes deriving (through other local classes) from IterableDataset
        cls = classes.get(pending.pop())
        if cls is None or cls.name in seen:
            continue
        seen.add(cls.name)
        for base in cls.bases:
            base_name = ctx.parsed.qualified_name(base) or ""
            if base_name.startswith(_ITERABLE_DATASETS):
                return True
            pending.append(base_name)
    return False


def _classes_by_name(parsed: ParsedModule) -> dict[str, ast.ClassDef]:
    classes = parsed.__dict__.get("_classes_by_name")
    if classes is None:
        classes = parsed.__dict__["_classes_by_name"] = {c.name: c for c in nodes(parsed, ast.ClassDef)}
    return classes


def _iterables_of_training_loops(ctx: RuleContext) -> set[ast.AST]:
    """DataLoader calls iterated by a loop that trains (backward and an optimizer step)."""
    found: set[ast.AST] = set()
    for loop in ctx.training.loops:
        if not isinstance(loop.node, (ast.For, ast.AsyncFor)):
            continue
        if not (loop.of(EventKind.BACKWARD) and loop.of(EventKind.STEP)):
            continue
        found.update(ctx.training.memo(loop.node, "TL111 loader calls", lambda: _iterated_loader_calls(ctx, loop)))
    return found


def _iterated_loader_calls(ctx: RuleContext, loop) -> list[ast.AST]:
    iterable = _unwrap_iteration(ctx, loop.node.iter)
    return [v for v in _loader_values(ctx, iterable) if isinstance(v, ast.Call)]


def _loader_values(ctx: RuleContext, expr: ast.AST, depth: int = 0) -> list[ast.AST]:
    """What `expr` may hold: its assigned value, or, for a helper's parameter, the arguments
    passed at the helper's call sites in this file (`train(model, loader)`)."""
    if isinstance(expr, ast.Attribute):
        value = _attribute_value(ctx, expr)
        return [value] if value is not None else []
    if not isinstance(expr, ast.Name):
        return [expr]
    value = reaching_value(ctx.parsed, expr)
    if value is not None:
        return [value]
    function = ctx.parsed.enclosing(expr, (ast.FunctionDef, ast.AsyncFunctionDef))
    if function is None or depth > 3:
        return []
    return [value for source in ctx.training.argument_sources(function, expr.id)
            for value in _loader_values(ctx, source, depth + 1)]


def _unwrap_iteration(ctx: RuleContext, expr: ast.AST) -> ast.AST:
    while isinstance(expr, ast.Call) and expr.args and (ctx.parsed.qualified_name(expr.func) or "") in _ITERATION_WRAPPERS:
        expr = expr.args[0]
    return expr


def _attribute_value(ctx: RuleContext, attribute: ast.Attribute) -> ast.AST | None:
    """`self.train_loader` -> the value last assigned to it anywhere in the file."""
    key = target_key(attribute)
    return file_facts(ctx.parsed).attribute_value(key) if key else None
