"""Code actions: quick fixes for findings, "suppress on this line", and scaffold offers.

Scaffold edits are built lazily through `codeAction/resolve` when the client supports resolving
`edit` (building a codemod on every cursor move would be wasted work); otherwise eagerly.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lsprotocol import types

from torch_lsp.analysis.facts import Fix, Position, Span, TextEdit
from torch_lsp.analysis.rules.selection import suppressed_codes
from torch_lsp.server.convert import from_lsp_range, to_workspace_edit

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer

KINDS = [types.CodeActionKind.QuickFix, types.CodeActionKind.RefactorRewrite, types.CodeActionKind.Source]


def register(ls: "TorchLanguageServer") -> None:
    @ls.feature(types.TEXT_DOCUMENT_CODE_ACTION,
                types.CodeActionOptions(code_action_kinds=KINDS, resolve_provider=True))
    async def code_action(ls: "TorchLanguageServer", params: types.CodeActionParams):
        return await actions_for(ls, params)

    @ls.feature(types.CODE_ACTION_RESOLVE)
    async def resolve(ls: "TorchLanguageServer", action: types.CodeAction):
        return await resolve_scaffold(ls, action)


async def actions_for(ls: "TorchLanguageServer", params: types.CodeActionParams) -> list[types.CodeAction] | None:
    uri = params.text_document.uri
    analysis = await ls.documents.ensure_analysis(uri)
    state = ls.documents.get(uri)
    if analysis is None or not analysis.ok or state is None:
        return None
    lines = analysis.parsed.lines
    span = from_lsp_range(params.range, lines, ls.position_encoding)
    wanted = params.context.only
    actions: list[types.CodeAction] = []
    if _wants(wanted, types.CodeActionKind.QuickFix):
        for finding in state.current_findings():
            # Clients ask at the cursor (Neovim) or for the diagnostic's range (VS Code): a
            # finding qualifies by overlapping the range or by being one of the diagnostics sent.
            diagnostic = _matching_diagnostic(params, finding, lines, ls.position_encoding)
            if not finding.span.overlaps(span) and diagnostic is None:
                continue
            if finding.fix is not None:
                actions.append(_action(ls, finding.fix, uri, state.version, lines, types.CodeActionKind.QuickFix, diagnostic))
            actions.append(_action(ls, _suppression_fix(finding.code, finding.span.start.line, lines), uri,
                                   state.version, lines, types.CodeActionKind.QuickFix, diagnostic, preferred=False))
    from torch_lsp import scaffold  # libcst and the templates load on the first code action

    offers = await asyncio.get_running_loop().run_in_executor(None, scaffold.offers, analysis.source, span, _path(ls, uri))
    lazy = _client_resolves_edits(ls)
    for offer in offers:
        if not _wants(wanted, offer.kind):
            continue
        action = types.CodeAction(title=offer.title, kind=offer.kind,
                                   data={"uri": uri, "version": state.version, "offer": offer.id,
                                         "range": [span.start.line, span.start.col, span.end.line, span.end.col]})
        actions.append(action if lazy else await resolve_scaffold(ls, action))
    return actions


async def resolve_scaffold(ls: "TorchLanguageServer", action: types.CodeAction) -> types.CodeAction:
    data = action.data if isinstance(action.data, dict) else {}
    uri, offer_id = data.get("uri"), data.get("offer")
    state = ls.documents.get(uri) if uri else None
    if state is None or offer_id is None or data.get("version") != state.version:
        return action  # stale or unknown: no edit rather than a wrong one
    source = ls.documents.text(uri)
    r = data.get("range", [0, 0, 0, 0])
    span = Span(Position(r[0], r[1]), Position(r[2], r[3]))
    from torch_lsp import scaffold

    fix = await asyncio.get_running_loop().run_in_executor(None, scaffold.build, source, offer_id, span, _path(ls, uri))
    if fix is not None:
        lines = source.splitlines()
        action.edit = to_workspace_edit(fix, uri, state.version, lines, ls.position_encoding)
    return action


def _action(ls, fix: Fix, uri, version, lines, kind, diagnostic, preferred=None) -> types.CodeAction:
    return types.CodeAction(title=fix.title, kind=kind,
                            diagnostics=[diagnostic] if diagnostic else None,
                            is_preferred=fix.preferred if preferred is None else preferred,
                            edit=to_workspace_edit(fix, uri, version, lines, ls.position_encoding))


def _suppression_fix(code: str, line: int, lines: list[str]) -> Fix:
    """Add `code` to the line's `# torch-lsp: ignore[...]` comment, or append one."""
    text = lines[line] if line < len(lines) else ""
    existing = suppressed_codes(text)
    if existing:
        start = text.index("ignore[") + len("ignore[")
        end = text.index("]", start)
        edit = TextEdit(Span(Position(line, end), Position(line, end)), f", {code}")
    else:
        at = Position(line, len(text))
        edit = TextEdit(Span(at, at), f"  # torch-lsp: ignore[{code}]")
    return Fix(f"Suppress {code} on this line", (edit,), preferred=False)


def _matching_diagnostic(params: types.CodeActionParams, finding, lines, encoding) -> types.Diagnostic | None:
    for diagnostic in params.context.diagnostics:
        if diagnostic.code == finding.code and diagnostic.source == "torch-lsp" and \
                from_lsp_range(diagnostic.range, lines, encoding).start.line == finding.span.start.line:
            return diagnostic
    return None


def _wants(only: list[str] | None, kind: str) -> bool:
    return not only or any(kind == k or kind.startswith(f"{k}.") for k in only)


def _client_resolves_edits(ls) -> bool:
    caps = ls.client_capabilities.text_document
    action_caps = caps.code_action if caps else None
    support = action_caps.resolve_support if action_caps else None
    return bool(support and "edit" in support.properties)


def _path(ls, uri: str) -> str:
    return ls.workspace.get_text_document(uri).path
