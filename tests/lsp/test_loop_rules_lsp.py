"""Loop-order and evaluation rules through the real protocol: a multi-edit fix (TL104 wraps a
loop in `with torch.no_grad():`) and a move (TL106) arrive as one versioned edit each, and
applying them the way an editor does removes exactly their diagnostics."""

from __future__ import annotations

from lsprotocol import types

from tests.conftest import ROOT
from tests.lsp.conftest import apply_text_edits, diagnostics_for, open_text, replace_text

URI = (ROOT / "scratch_loop_rules.py").as_uri()  # never written: the text lives in the editor
TEXT = '''import torch
from torch import nn
from torch.optim.lr_scheduler import StepLR

model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scheduler = StepLR(optimizer, step_size=1)
criterion = nn.CrossEntropyLoss()


def fit(train_loader, val_loader):
    for epoch in range(3):
        scheduler.step()
        model.train()
        for inputs, labels in train_loader:
            optimizer.zero_grad()
            criterion(model(inputs), labels).backward()
            optimizer.step()
        model.eval()
        correct = 0
        for inputs, labels in val_loader:
            correct += (model(inputs).argmax(1) == labels).sum().item()
        print(epoch, correct)
'''


async def _apply_fix(client, uri, text, diagnostic, version):
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=diagnostic.range,
        context=types.CodeActionContext(diagnostics=[diagnostic])))
    fix = next(a for a in actions if a.kind == types.CodeActionKind.QuickFix and a.is_preferred)
    [change] = fix.edit.document_changes
    assert change.text_document.version == version
    return apply_text_edits(text, change.edits)


async def test_wrap_and_move_fixes_through_the_protocol(client):
    open_text(client, URI, TEXT)
    diagnostics = await diagnostics_for(client, URI, version=1)
    by_code = {d.code: d for d in diagnostics}
    assert sorted(by_code) == ["TL104", "TL106"]
    assert by_code["TL106"].range.start.line == 12 and by_code["TL104"].range.start.line == 21

    fixed = await _apply_fix(client, URI, TEXT, by_code["TL104"], version=1)
    assert "        with torch.no_grad():\n            for inputs, labels in val_loader:\n" in fixed
    replace_text(client, URI, fixed, version=2)
    diagnostics = await diagnostics_for(client, URI, version=2)
    assert [d.code for d in diagnostics] == ["TL106"]

    fixed = await _apply_fix(client, URI, fixed, diagnostics[0], version=2)
    assert "            optimizer.step()\n        scheduler.step()\n        model.eval()\n" in fixed
    replace_text(client, URI, fixed, version=3)
    assert await diagnostics_for(client, URI, version=3) == []
