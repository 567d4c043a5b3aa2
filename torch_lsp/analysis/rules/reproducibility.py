"""Runs that cannot be repeated (TL120, off by default)."""

from __future__ import annotations

import ast
import re

from torch_lsp.analysis.facts import Severity, Span
from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.rules import REGISTRY, RuleContext, rule
from torch_lsp.analysis.rules._edits import insert_statement_before
from torch_lsp.analysis.rules.deprecations import module_level_imports
from torch_lsp.analysis.training import EventKind

_TORCH_SEEDS = ("torch.manual_seed", "torch.random.manual_seed", "torch.cuda.manual_seed", "torch.cuda.manual_seed_all")
# Helpers from libraries and your own code: seed_everything, set_seed, seed_all, fix_seeds, ...
_SEED_HELPER = re.compile(r"(^|_)(seed|seeds|seeding)($|_)|manual_seed", re.IGNORECASE)


@rule("TL120", "unseeded-training-script", Severity.INFO,
      "A training script never seeds the random number generators.", fixable=True, default_enabled=False)
def unseeded_training_script(ctx: RuleContext):
    """
    ## What it does
    Reports an entry script — a file with an `if __name__ == "__main__":` block, or a training
    loop at module level — that trains (a loop calls `.backward()`) but never seeds torch's
    random number generators. `torch.manual_seed(...)`, `torch.cuda.manual_seed_all(...)` and
    seeding helpers (`seed_everything`, `set_seed`, `transformers.set_seed`, a `seed_all`
    function of your own, ...) all count, wherever they are called in the file.

    This rule is off by default: enable it with `select = ["TL120"]`.

    ## Why is this bad?
    Weight initialisation, dropout, data shuffling and augmentation all draw random numbers.
    Without a seed, two runs of the same script give different results, so a change in the
    code cannot be told apart from luck, and a bug seen once cannot be reproduced.

    ## Example
    ```python
    if __name__ == "__main__":
        model = Net()
        train(model, loader)
    ```

    ## Use instead
    ```python
    if __name__ == "__main__":
        torch.manual_seed(0)
        model = Net()
        train(model, loader)
    ```

    ## Fix
    Inserts `torch.manual_seed(0)` at the top of the `__main__` block (or before the
    module-level training loop). Suppress with `# torch-lsp: ignore[TL120]` on the reported
    line.
    """
    this = REGISTRY["TL120"]
    parsed = ctx.parsed
    if not any(loop.of(EventKind.BACKWARD) for loop in ctx.training.loops):
        return
    entry = _entry_statement(ctx)
    if entry is None or _seeds_somewhere(ctx):
        return
    torch_name = next((local for local, module in module_level_imports(parsed).items() if module == "torch"), None)
    first = entry.body[0] if isinstance(entry, ast.If) else entry
    fix = None
    if torch_name is not None:
        fix = insert_statement_before(parsed, first, f"{torch_name}.manual_seed(0)", f"Seed torch: `{torch_name}.manual_seed(0)`")
    header_end = entry.test if isinstance(entry, ast.If) else entry.iter if isinstance(entry, (ast.For, ast.AsyncFor)) else entry
    span = Span(parsed.span(entry).start, parsed.span(header_end).end)
    yield this.finding(span, "this training script never seeds the random number generators: runs cannot be "
                       "reproduced; call `torch.manual_seed(...)` (or your seeding helper) first", fix)


def _entry_statement(ctx: RuleContext) -> ast.stmt | None:
    """The `if __name__ == "__main__":` block, else the first module-level loop that trains."""
    for node in ctx.parsed.tree.body:
        if isinstance(node, ast.If) and _is_main_guard(node.test):
            return node
    for loop in ctx.training.loops:
        if ctx.parsed.parent(loop.node) is ctx.parsed.tree and loop.of(EventKind.BACKWARD):
            return loop.node
    return None


def _is_main_guard(test: ast.expr) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _seeds_somewhere(ctx: RuleContext) -> bool:
    # Per top-level statement, remembered across edits that do not touch it (a large file
    # has ~10,000 calls to look at).
    return any(ctx.training.memo(statement, "TL120 seeds", lambda: _seeds_in(ctx, statement))
               for statement in ctx.whole.tree.body)


def _seeds_in(ctx: RuleContext, statement: ast.stmt) -> bool:
    parsed = ctx.parsed
    for call in nodes(parsed, ast.Call, statement):
        qualified = parsed.qualified_name(call.func) or ""
        if qualified in _TORCH_SEEDS:
            return True
        if _SEED_HELPER.search(qualified.rsplit(".", 1)[-1]) and not qualified.startswith(("random.", "numpy.")):
            return True
    return False
