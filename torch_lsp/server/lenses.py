"""Code lenses: "▶ Train" above ``if __name__ == "__main__":`` and training loops, and
"Last run: loss 0.41 · 3 min ago" beside the first one when the run store has a run of the file;
from the latest shape report (server/cost.py), "62,006 params · [8, 3, 32, 32] → [8, 10]" above
each module class that ran and "step peak ≈ 3.1 GiB at batch 128 (...)" above the training loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.uris import to_fs_path

from torch_lsp.server import cost
from torch_lsp.server.commands import METRICS, TRAIN
from torch_lsp.server.convert import to_lsp_range
from torch_lsp.training import store
from torch_lsp.training.runner import summary_for
from torch_lsp.training.summary import short_label
from torch_lsp.training.targets import train_targets

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer

TITLES = {"main": "▶ Train", "loop": "▶ Train (runs the whole script)"}


def register(ls: "TorchLanguageServer") -> None:
    @ls.feature(types.TEXT_DOCUMENT_CODE_LENS, types.CodeLensOptions(resolve_provider=False))
    async def code_lens(ls: "TorchLanguageServer", params: types.CodeLensParams):
        ls.on_screen.asked(params.text_document.uri)
        return await lenses_for(ls, params.text_document.uri)


async def lenses_for(ls: "TorchLanguageServer", uri: str) -> list[types.CodeLens]:
    analysis = await ls.documents.ensure_analysis(uri)
    if analysis is None or not analysis.ok:
        return []
    shapes = ls.shapes.latest_costs(uri) if getattr(ls, "shapes", None) else None
    costs = cost.code_lenses(ls, uri, analysis.parsed, shapes)
    return await _training_lenses(ls, uri, analysis) + costs


async def _training_lenses(ls: "TorchLanguageServer", uri: str, analysis) -> list[types.CodeLens]:
    targets = train_targets(analysis.parsed)
    if not targets:
        return []
    lines = analysis.parsed.lines
    lenses = [types.CodeLens(range=to_lsp_range(span, lines, ls.position_encoding),
                             command=types.Command(title=TITLES[kind], command=TRAIN, arguments=[{"script": uri}]))
              for span, kind in targets]
    last = await asyncio.to_thread(_last_run_label, ls, to_fs_path(uri))
    if last is not None:
        label, run_id = last
        lenses.insert(1, types.CodeLens(range=lenses[0].range, command=types.Command(
            title=label, command=METRICS, arguments=[run_id])))
    return lenses


def _last_run_label(ls: "TorchLanguageServer", path: str | None) -> tuple[str, str] | None:
    if not path:
        return None
    trainer = getattr(ls, "trainer", None)
    runs_dir = trainer.runs_dir(path) if trainer else store.runs_dir_for(ls.root_path, ls.settings.training.runs_dir)
    record = store.latest_run_for_script(runs_dir, path)
    if record is None:
        return None
    live = trainer.live_run(record.run_id) if trainer else None
    if live is not None and not live.finished:
        return "Training… (click for metrics)", record.run_id
    return short_label(summary_for(record, draw=False)), record.run_id
