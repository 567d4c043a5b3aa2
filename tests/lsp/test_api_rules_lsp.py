"""API rules through the real protocol: a TL302 quick fix whose WorkspaceEdit has several edits (the
call and a new `import torch`), applied the way an editor applies it."""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types

from tests.lsp.conftest import apply_text_edits, diagnostics_for, open_text, replace_text

FIXTURE = Path(__file__).resolve().parent.parent / "rules" / "fixtures" / "TL302_import_added.py"
URI = FIXTURE.as_uri()


async def test_tl302_quick_fix_rewrites_the_call_and_adds_the_import(client):
    text = FIXTURE.read_text()
    open_text(client, URI, text)
    [tl302] = [d for d in await diagnostics_for(client, URI, version=1) if d.code == "TL302"]
    assert tl302.range.start.line == 4 and "torch.amp.GradScaler" in tl302.message

    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), range=tl302.range,
        context=types.CodeActionContext(diagnostics=[tl302])))
    fix = next(a for a in actions if a.kind == types.CodeActionKind.QuickFix and a.is_preferred)
    [change] = fix.edit.document_changes
    assert len(change.edits) == 3  # the callee, the "cuda" argument, the import
    fixed = apply_text_edits(text, change.edits)
    assert "import torch\nfrom torch.cuda.amp import GradScaler" in fixed
    assert 'scaler = torch.amp.GradScaler("cuda", enabled=False)' in fixed

    replace_text(client, URI, fixed, version=2)
    assert [d for d in await diagnostics_for(client, URI, version=2) if d.code == "TL302"] == []
