"""The scaffold actions through a real server: offered in the code-action menu where the cursor
is, resolved lazily, and the resolved WorkspaceEdit gives the same program as `scaffold.build`."""

from lsprotocol import types

from harness import apply_edits, fixture, span_at
from tests.lsp.conftest import apply_text_edits, client, open_text  # noqa: F401 - `client` is a fixture
from torch_lsp import scaffold

URI = "file:///tmp/torch-lsp-scaffold/seed.py"


async def code_actions(client, text: str, needle: str, only: list[str]) -> list[types.CodeAction]:
    span = span_at(text, needle)
    position = types.Position(span.start.line, span.start.col)
    return await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), range=types.Range(position, position),
        context=types.CodeActionContext(diagnostics=[], only=only)))


async def test_scheduler_offered_in_the_loop_resolved_and_applied(client):
    seed = fixture("cifar10_seed.py")
    open_text(client, URI, seed)
    actions = await code_actions(client, seed, "loss.backward()", [types.CodeActionKind.RefactorRewrite])
    by_title = {a.title: a for a in actions}
    assert "Add an LR scheduler: StepLR (decay by 10x every third of training)" in by_title
    assert "Clip the gradient norm between backward() and optimizer.step()" in by_title
    assert all(a.kind.startswith("refactor.rewrite") for a in actions)

    resolved = await client.code_action_resolve_async(by_title["Add an LR scheduler: StepLR (decay by 10x every "
                                                                "third of training)"])
    changes = resolved.edit.document_changes[0].edits if resolved.edit.document_changes else resolved.edit.changes[URI]
    expected = apply_edits(seed, scaffold.build(seed, "scheduler.step_lr", span_at(seed, "loss.backward()")).edits)
    assert apply_text_edits(seed, changes) == expected
    assert "scheduler.step()  # once per epoch" in expected


async def test_source_actions_offer_the_training_loop_on_the_model_class(client):
    source = fixture("no_loop.py")
    open_text(client, URI, source)
    actions = await code_actions(client, source, "class MLP", [types.CodeActionKind.Source])
    assert "Write a training loop for `model`" in [a.title for a in actions]
    nothing = await code_actions(client, source, "import os", [types.CodeActionKind.RefactorRewrite])
    assert not [a for a in nothing or [] if a.data and str(a.data.get("offer", "")).startswith(("loop.", "reg.",
                                                                                                  "scheduler."))]
