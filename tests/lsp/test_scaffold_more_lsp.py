"""The actions of issue 5 items 5-6 through a real server: offered in the editor's code-action
menu on the training loop, resolved into a versioned edit, and the edit is what the scaffold
package builds (so everything the scaffold tests prove holds in the editor too)."""

from __future__ import annotations

from lsprotocol import types

from tests.conftest import FIXTURES
from tests.lsp.conftest import apply_text_edits, diagnostics_for, open_text

SEED = FIXTURES / "cifar10_seed.py"
URI = SEED.as_uri()


async def actions_at(client, line: int, only: list[str]) -> list[types.CodeAction]:
    at = types.Position(line=line, character=8)
    return await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), range=types.Range(start=at, end=at),
        context=types.CodeActionContext(diagnostics=[], only=only)))


async def resolved(client, action: types.CodeAction) -> types.CodeAction:
    return action if action.edit is not None else await client.code_action_resolve_async(action)


async def test_mixed_precision_and_checkpoints_from_the_editor(client):
    from torch_lsp import scaffold
    from torch_lsp.analysis.facts import Position, Span

    text = SEED.read_text(encoding="utf-8")
    open_text(client, URI, text)
    await diagnostics_for(client, URI, version=1)
    line = text.splitlines().index("        loss.backward()")
    actions = await actions_at(client, line, [types.CodeActionKind.RefactorRewrite])
    titles = {a.title: a for a in actions}
    assert "Train with DistributedDataParallel (torchrun-ready main(), DistributedSampler)" in titles
    amp = await resolved(client, titles["Train with mixed precision (torch.autocast + torch.amp.GradScaler)"])
    [change] = amp.edit.document_changes
    assert change.text_document.version == 1
    edited = apply_text_edits(text, change.edits)
    expected = scaffold.build(text, "precision.amp", Span(Position(line, 8), Position(line, 8)))
    from tests.scaffold.harness import apply_edits

    assert edited == apply_edits(text, expected.edits)
    assert "        scaler.scale(loss).backward()\n" in edited

    # Source actions (the editor's "Source Action..." menu) include seeding, anywhere in the file.
    sources = await actions_at(client, 0, [types.CodeActionKind.Source])
    assert "Make training reproducible (seed everything, deterministic algorithms)" in {a.title for a in sources}
