"""Code actions that write training code, fitted to the user's file.

The server (server/actions.py) and the CLI call two functions:

    offers(source, span, path)          -> list[Offer]   which actions make sense at `span`
    build(source, offer_id, span, path) -> Fix | None    the text edits of one action

`offers` runs on every cursor move, so it only looks at the cached `ast` facts (through
`ScaffoldContext`); `build` does the editing work (`codemod.EditPlan`, libcst where an edit
must preserve the user's formatting). Both never raise: a broken action is logged and skipped.

Each action family is one module of this package that registers its actions with `@action`:

    @action("reg.clip_grad", "Clip gradients before optimizer.step()", when=_can_clip)
    def clip_gradients(ctx: ScaffoldContext, plan: EditPlan) -> None:
        plan.insert_before(ctx.step_statement, "torch.nn.utils.clip_grad_norm_(...)")

`when(ctx)` decides whether the action is offered (fast, ast only; it must also say False when
the thing already exists, which makes every action idempotent); the build function adds edits
to `plan`. Titles may be a string or a function of the context ("Write a training loop for
`net`").
"""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

from torch_lsp.analysis.facts import Fix, Span

if TYPE_CHECKING:
    from torch_lsp.analysis.notebook import NotebookProgram

log = logging.getLogger(__name__)

# LSP CodeActionKind values (kept as plain strings: this package knows nothing of LSP types).
REWRITE = "refactor.rewrite"
SOURCE = "source"

# Modules of this package that hold shared machinery, not actions.
_NOT_FAMILIES = {"context", "codemod", "templates", "command"}


@dataclass(frozen=True)
class Offer:
    id: str
    title: str
    kind: str  # REWRITE or SOURCE


Title = Union[str, Callable[["ScaffoldContext"], str]]


@dataclass(frozen=True)
class Action:
    id: str
    title: Title
    kind: str
    when: Callable[["ScaffoldContext"], bool]
    edit: Callable[["ScaffoldContext", "EditPlan"], None]
    family: str = ""

    def title_for(self, ctx: "ScaffoldContext") -> str:
        return self.title(ctx) if callable(self.title) else self.title


REGISTRY: dict[str, Action] = {}


def register(entry: Action) -> Action:
    if entry.id in REGISTRY:
        raise ValueError(f"scaffold action {entry.id} registered twice")
    REGISTRY[entry.id] = entry
    return entry


def action(id: str, title: Title, *, when: Callable[["ScaffoldContext"], bool], kind: str = REWRITE):
    """Register the decorated `edit(ctx, plan)` function as action `id`, offered when `when(ctx)`."""

    def decorate(edit):
        register(Action(id, title, kind, when, edit, edit.__module__.rsplit(".", 1)[-1]))
        return edit

    return decorate


@functools.cache
def load_actions() -> dict[str, Action]:
    """Import every action family of this package once, and return the registry."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name not in _NOT_FAMILIES:
            importlib.import_module(f"{__name__}.{info.name}")
    return REGISTRY


def offers(source: str, span: Span, path: str = "<buffer>", *, import_limit: int | None = None) -> list[Offer]:
    """The actions that make sense at `span` and whose result is not already in the file.

    `import_limit`: new imports go above this 0-based line (a notebook's first cell ends there).
    """
    ctx = _context(source, span, path, import_limit)
    if ctx is None:
        return []
    found: list[Offer] = []
    for entry in load_actions().values():
        try:
            if entry.when(ctx):
                found.append(Offer(entry.id, entry.title_for(ctx), entry.kind))
        except Exception:  # noqa: BLE001 - one broken action must not hide the others
            log.exception("scaffold action %s failed to decide on %s", entry.id, path)
    return found


def build(source: str, offer_id: str, span: Span, path: str = "<buffer>", *,
          import_limit: int | None = None) -> Fix | None:
    """The edits of action `offer_id` at `span`, or None when it does not apply there."""
    entry = load_actions().get(offer_id)
    ctx = _context(source, span, path, import_limit)
    if entry is None or ctx is None:
        return None
    try:
        if not entry.when(ctx):
            return None
        plan = EditPlan(ctx)
        entry.edit(ctx, plan)
        return plan.to_fix(entry.title_for(ctx))
    except Exception:  # noqa: BLE001 - the user gets no edit rather than a crashed server
        log.exception("scaffold action %s failed to build on %s", offer_id, path)
        return None


def _context(source: str, span: Span, path: str, import_limit: int | None = None) -> "ScaffoldContext | None":
    from torch_lsp.analysis.syntax import ParseFailure, parse

    parsed = parse(source)
    if isinstance(parsed, ParseFailure):
        return None
    return ScaffoldContext(parsed, span, path, import_limit)


# -- notebooks -----------------------------------------------------------------------------------
# A notebook is one program (analysis/notebook.py). An action asked for in cell k must make sense
# for the whole notebook (it is not already there) and for the cells that have run when cell k
# runs (the names it uses exist by then); it is written into cells 0..k, so the notebook still
# runs top to bottom: code appended "at the end" lands at the end of cell k, imports in cell 0.

# Actions for scripts only: torchrun launches a script's main(), never a notebook.
_SCRIPT_ONLY = {"distributed.ddp"}


def offers_in_cell(program: "NotebookProgram", cell: int, span: Span, path: str = "<notebook>") -> list[Offer]:
    """The actions for a cursor at `span` (program coordinates) in `cell`."""
    limit = program.first_cell_end()
    whole = {offer.id for offer in offers(program.source, span, path, import_limit=limit)} - _SCRIPT_ONLY
    return [offer for offer in offers(program.upto(cell).source, span, path, import_limit=limit) if offer.id in whole]


def build_in_cell(program: "NotebookProgram", cell: int, offer_id: str, span: Span,
                  path: str = "<notebook>") -> Fix | None:
    """The edits of action `offer_id` asked for at `span` in `cell`, in program coordinates
    (`program.fix_by_cell` turns them into edits of the cells)."""
    if offer_id not in {offer.id for offer in offers_in_cell(program, cell, span, path)}:
        return None
    return build(program.upto(cell).source, offer_id, span, path, import_limit=program.first_cell_end())


# Imported last: both modules import names from this one.
from torch_lsp.scaffold.codemod import EditPlan  # noqa: E402
from torch_lsp.scaffold.context import ScaffoldContext  # noqa: E402

__all__ = ["Action", "EditPlan", "Offer", "REGISTRY", "REWRITE", "SOURCE", "ScaffoldContext", "action", "build",
           "build_in_cell", "load_actions", "offers", "offers_in_cell", "register"]
