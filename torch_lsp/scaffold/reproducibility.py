"""Reproducible training runs (issue 5, item 5).

`reproducibility.seed`: a `seed_everything(seed)` function (Python's `random`, NumPy when the
file uses it, torch on every device; `cudnn.benchmark` off; deterministic algorithms, warning
where an op has none; the cuBLAS workspace setting CUDA needs for deterministic matmuls),
defined after the imports and called right away, before anything random happens. An existing
module-level `torch.manual_seed(<n>)` lends its seed.

A source action, offered anywhere in a file that trains something (it has a model, optimizer
or data loader) and does not yet call `torch.use_deterministic_algorithms`.
"""

from __future__ import annotations

import ast

from torch_lsp.analysis.training import Kind
from torch_lsp.scaffold import SOURCE, action
from torch_lsp.scaffold.codemod import EditPlan, render
from torch_lsp.scaffold.context import ScaffoldContext
from torch_lsp.scaffold.templates import fresh_name

SEED_FUNCTION = '''
def seed_everything(seed: int) -> None:
    """Make runs repeatable: seed every random number generator training uses and ask
    PyTorch for deterministic kernels (some GPU ops get slower; ops without a deterministic
    version warn)."""
    $random.seed(seed)
$numpy    $torch.manual_seed(seed)  # seeds the CPU and every CUDA device
    # cuBLAS reads this when CUDA starts: it must be set before the first matmul on the GPU.
    $os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    $torch.backends.cudnn.benchmark = False
    $torch.use_deterministic_algorithms(True, warn_only=True)


$seed_name = $seed
seed_everything($seed_name)
'''


def _trains_something(ctx: ScaffoldContext) -> bool:
    return any(ctx.bindings_of(kind) for kind in (Kind.MODEL, Kind.OPTIMIZER, Kind.LOADER))


def _can_seed(ctx: ScaffoldContext) -> bool:
    return (not ctx.calls("torch.use_deterministic_algorithms") and not ctx.defines("seed_everything")
            and _trains_something(ctx) and _first_code_statement(ctx) is not None)


def _first_code_statement(ctx: ScaffoldContext) -> ast.stmt | None:
    """The first top-level statement after the docstring and the imports."""
    for index, node in enumerate(ctx.parsed.tree.body):
        docstring = index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if not docstring and not isinstance(node, (ast.Import, ast.ImportFrom)):
            return node
    return None


def _existing_seed(ctx: ScaffoldContext) -> str | None:
    """`n` of a module-level `torch.manual_seed(n)` with a literal `n`."""
    for node in ctx.parsed.tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) \
                and ctx.parsed.resolves_to(node.value.func, "torch.manual_seed") and node.value.args \
                and isinstance(node.value.args[0], ast.Constant) and isinstance(node.value.args[0].value, int):
            return str(node.value.args[0].value)
    return None


@action("reproducibility.seed", "Make training reproducible (seed everything, deterministic algorithms)",
        when=_can_seed, kind=SOURCE)
def add_seeding(ctx: ScaffoldContext, plan: EditPlan) -> None:
    # References first: the imports they add go after the file's imports, above the function.
    names = {"random": plan.module_reference("random.seed"),
             "os": plan.module_reference("os.environ"),
             "torch": plan.module_reference("torch.manual_seed")}
    uses_numpy = any(target == "numpy" or target.startswith("numpy.") for target in ctx.parsed.imports.values())
    names["numpy"] = f"    {plan.reference('numpy.random.seed')}(seed)\n" if uses_numpy else ""
    names["seed_name"] = fresh_name(ctx, "SEED")
    names["seed"] = _existing_seed(ctx) or "0"
    code = render(SEED_FUNCTION, **names)
    first = _first_code_statement(ctx)
    body = ctx.parsed.tree.body
    previous = body[body.index(first) - 1] if body.index(first) > 0 else None
    if isinstance(previous, (ast.Import, ast.ImportFrom)):
        plan.insert_after(previous, "\n\n" + code)  # right below the imports (and those just added)
    else:
        plan.insert_before(first, code + "\n\n", above_comments=True)
