"""The foundation through the real protocol: lifecycle, sync, diagnostics, fixes, settings,
bad input. Each test runs its own server process."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from lsprotocol import types

from tests.conftest import FIXTURES, ROOT
from tests.lsp.conftest import SERVER, apply_text_edits, diagnostics_for, open_text, replace_text

MISSING = FIXTURES / "missing_zero_grad.py"
URI = MISSING.as_uri()


async def test_capabilities(client):
    info = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.serverInfo", arguments=[]))
    assert info["version"]
    caps = client.protocol.server_capabilities if hasattr(client.protocol, "server_capabilities") else None
    del caps  # pygls' client does not keep them; the probe in bench/ checks the JSON itself


async def test_tl101_published_at_the_step_line_then_fixed_by_its_quick_fix(client):
    text = MISSING.read_text()
    open_text(client, URI, text)
    diagnostics = await diagnostics_for(client, URI, version=1)
    [tl101] = [d for d in diagnostics if d.code == "TL101"]
    assert tl101.range.start.line == 24 and tl101.source == "torch-lsp"
    assert tl101.severity == types.DiagnosticSeverity.Warning
    assert tl101.code_description.href.endswith("rules.md#tl101")

    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), range=tl101.range,
        context=types.CodeActionContext(diagnostics=[tl101])))
    fix = next(a for a in actions if a.kind == types.CodeActionKind.QuickFix and a.is_preferred)
    [change] = fix.edit.document_changes
    assert change.text_document.version == 1
    fixed = apply_text_edits(text, change.edits)
    assert "        optimizer.zero_grad()\n        loss = loss_fn" in fixed

    replace_text(client, URI, fixed, version=2)
    assert [d for d in await diagnostics_for(client, URI, version=2) if d.code == "TL101"] == []

    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=URI)))
    assert await diagnostics_for(client, URI) == []


async def test_suppression_action_silences_the_line(client):
    text = MISSING.read_text()
    open_text(client, URI, text)
    [tl101] = [d for d in await diagnostics_for(client, URI, version=1) if d.code == "TL101"]
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), range=tl101.range,
        context=types.CodeActionContext(diagnostics=[tl101])))
    suppress = next(a for a in actions if a.title == "Suppress TL101 on this line")
    replace_text(client, URI, apply_text_edits(text, suppress.edit.document_changes[0].edits), version=2)
    assert [d for d in await diagnostics_for(client, URI, version=2) if d.code == "TL101"] == []


async def test_only_the_latest_version_is_published_during_fast_typing(client):
    text = MISSING.read_text()
    open_text(client, URI, text)
    await diagnostics_for(client, URI, version=1)
    fixed = text.replace("        loss = loss_fn", "        optimizer.zero_grad()\n        loss = loss_fn")
    for version in range(2, 12):  # ten edits well inside the 250 ms debounce
        replace_text(client, URI, fixed if version % 2 else text, version=version)
    published = []  # versions, in the order their diagnostics arrived
    while not published or published[-1] != 11:
        params = await asyncio.wait_for(client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS), 60)
        if params.uri == URI:
            published.append(params.version)
    assert [d.code for d in client.diagnostics[URI]] == []  # version 11 is the fixed text
    # Never an older version's results after a newer one. Nothing needs waiting for after 11:
    # the server publishes only for the version it has, and it has 11 (documents.py).
    assert published == sorted(published)


async def test_a_document_typed_into_without_a_pause_is_still_analysed(client):
    """Edits every 50 ms never leave the 250 ms debounce a pause: the diagnostics of a version
    typed over come while the typing goes on (documents.debounce_delay_ms), not after it stops."""
    text = MISSING.read_text()
    open_text(client, URI, text)
    await diagnostics_for(client, URI, version=1)
    fixed = text.replace("        loss = loss_fn", "        optimizer.zero_grad()\n        loss = loss_fn")
    published = asyncio.ensure_future(client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS))
    version = 1
    while not published.done() and version < 600:  # 30 s of typing at most
        version += 1
        replace_text(client, URI, fixed if version % 2 else text, version=version)
        await asyncio.sleep(0.05)
    if not published.done():
        published.cancel()
        raise AssertionError("no diagnostics while typing went on")
    params = published.result()
    assert params.uri == URI and 1 < params.version <= version


async def test_syntax_error_publishes_nothing_for_the_broken_version(client):
    text = MISSING.read_text()
    open_text(client, URI, text)
    await diagnostics_for(client, URI, version=1)
    replace_text(client, URI, text + "\nfor x in :\n", version=2)
    # A code action needs the analysis of the current version: answered, version 2 was analysed.
    await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), range=types.Range(start=types.Position(line=0, character=0),
                                                                              end=types.Position(line=0, character=0)),
        context=types.CodeActionContext(diagnostics=[])))
    replace_text(client, URI, text, version=3)
    published = []
    while not published or published[-1] != 3:
        params = await asyncio.wait_for(client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS), 60)
        if params.uri == URI:
            published.append(params.version)
    assert 2 not in published
    assert [d.code for d in client.diagnostics[URI]] == ["TL101"]


async def test_invalid_setting_warns_and_server_keeps_working(client):
    client.set_configuration({"torchLsp": {"debounceMs": "fast", "execution": {"device": "tpu"}}})
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    open_text(client, URI, MISSING.read_text())
    assert [d.code for d in await diagnostics_for(client, URI, version=1)] == ["TL101"]
    for _ in range(50):
        if len(client.messages) >= 2:
            break
        await asyncio.sleep(0.1)
    text = "\n".join(m.message for m in client.messages)
    assert "'debounceMs' = 'fast'" in text and "using 250" in text
    assert "'execution.device' = 'tpu'" in text and "using 'meta'" in text


async def test_settings_select_and_ignore_apply_on_change(client):
    open_text(client, URI, MISSING.read_text())
    assert [d.code for d in await diagnostics_for(client, URI, version=1)] == ["TL101"]
    client.set_configuration({"torchLsp": {"rules": {"ignore": ["TL101"]}}})
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    assert await diagnostics_for(client, URI, version=1) == []


async def test_garbage_input_never_crashes(client):
    huge = "import torch\n" + "x = torch.zeros(3)\n" * 10_000
    open_text(client, "file:///tmp/huge.py", huge)
    assert await diagnostics_for(client, "file:///tmp/huge.py", version=1, timeout=60) == []
    open_text(client, "file:///tmp/binary.py", "\x00\x01\x02\udc80garbage")
    open_text(client, URI, MISSING.read_text())
    await diagnostics_for(client, URI, version=1)
    far = types.Range(start=types.Position(line=10_000, character=500), end=types.Position(line=10_001, character=0))
    # Past the end is clamped to the last line: whatever is offered there, no quick fix for a
    # finding that is not there, and no error.
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), range=far, context=types.CodeActionContext(diagnostics=[])))
    assert all(a.kind != types.CodeActionKind.QuickFix for a in actions or [])
    for uri in ("file:///tmp/binary.py", "file:///nowhere/unknown.py"):
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), range=far, context=types.CodeActionContext(diagnostics=[])))
        assert not actions
    info = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.serverInfo", arguments=[]))
    assert info["pid"] > 0


async def test_server_process_never_imports_torch_or_openssl(client):
    open_text(client, URI, MISSING.read_text())
    await diagnostics_for(client, URI, version=1)
    await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI),
        range=types.Range(start=types.Position(line=24, character=8), end=types.Position(line=24, character=8)),
        context=types.CodeActionContext(diagnostics=[])))
    info = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.serverInfo", arguments=[]))
    assert info["torchImported"] is False
    maps = Path(f"/proc/{info['pid']}/maps")  # Linux: the shared libraries the process mapped
    if maps.exists():  # ~4.5 MiB of the server's memory (cli._without_openssl)
        assert "libssl" not in maps.read_text() and "libcrypto" not in maps.read_text()


async def test_shutdown_and_exit_promptly():
    process = await asyncio.create_subprocess_exec(*SERVER, stdin=asyncio.subprocess.PIPE,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                   cwd=str(ROOT))

    def send(payload: bytes) -> None:
        process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(payload) + payload)

    send(b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"processId":null,"rootUri":null,"capabilities":{}}}')
    send(b'{"jsonrpc":"2.0","method":"initialized","params":{}}')
    send(b'{"jsonrpc":"2.0","id":2,"method":"shutdown"}')
    send(b'{"jsonrpc":"2.0","method":"exit"}')
    await process.stdin.drain()
    code = await asyncio.wait_for(process.wait(), timeout=60)  # a ceiling, not a measurement
    assert code == 0


async def test_tcp_transport(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await asyncio.create_subprocess_exec(*SERVER, "--tcp", f"127.0.0.1:{port}", cwd=str(ROOT),
                                                  stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        body = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"processId":null,"rootUri":null,"capabilities":{}}}'
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        length = int(header.split(b"Content-Length:")[1].split(b"\r\n")[0])
        reply = await reader.readexactly(length)
        assert b'"capabilities"' in reply and b'"id": 1' in reply
        writer.close()
    finally:
        server.kill()
        await server.wait()


async def test_server_info_says_how_fast_each_request_was_answered(client):
    open_text(client, URI, MISSING.read_text())
    await diagnostics_for(client, URI, version=1)
    for _ in range(5):
        await client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(line=24, character=8)))
    info = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.serverInfo", arguments=[{"resetLatency": True}]))
    hover = info["requestLatency"]["textDocument/hover"]
    assert hover["count"] == 5
    assert 0 < hover["p50Ms"] <= hover["p95Ms"] <= hover["p99Ms"] <= hover["maxMs"]
    # Reset: the hovers are forgotten; the reply that reset them is the one answer counted since.
    info = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.serverInfo", arguments=[]))
    assert "textDocument/hover" not in info["requestLatency"]
    assert info["requestLatency"]["workspace/executeCommand"]["count"] == 1

