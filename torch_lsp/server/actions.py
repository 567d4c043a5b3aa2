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
from torch_lsp.server.targets import Target, target_for

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer

KINDS = [types.CodeActionKind.QuickFix, types.CodeActionKind.RefactorRewrite, types.CodeActionKind.Source]


def register(ls: "TorchLanguageServer") -> None:
    @ls.feature(types.TEXT_DOCUMENT_CODE_ACTION,
                types.CodeActionOptions(code_action_kinds=KINDS, resolve_provider=True))
    async def code_action(ls: "TorchLanguageServer", params: types.CodeActionParams):
        ls.on_screen.asked(params.text_document.uri)
        return await actions_for(ls, params)

    @ls.feature(types.CODE_ACTION_RESOLVE)
    async def resolve(ls: "TorchLanguageServer", action: types.CodeAction):
        return await resolve_scaffold(ls, action)


async def actions_for(ls: "TorchLanguageServer", params: types.CodeActionParams) -> list[types.CodeAction] | None:
    uri = params.text_document.uri
    target = await target_for(ls, uri)
    if target is None:
        return None
    span = target.program_span(params.range)
    wanted = params.context.only
    actions: list[types.CodeAction] = []
    if _wants(wanted, types.CodeActionKind.QuickFix):
        for finding in target.findings:
            # Clients ask at the cursor (Neovim) or for the diagnostic's range (VS Code): a
            # finding qualifies by overlapping the range or by being one of the diagnostics sent.
            diagnostic = _matching_diagnostic(params, finding, target)
            if not finding.span.overlaps(span) and diagnostic is None:
                continue
            if finding.fix is not None:
                actions += _action(target, finding.fix, types.CodeActionKind.QuickFix, diagnostic)
            suppress = _suppression_fix(finding.code, finding.span.start.line, target.program_line(finding.span.start.line))
            actions += _action(target, suppress, types.CodeActionKind.QuickFix, diagnostic, preferred=False)
    if _wants(wanted, types.CodeActionKind.RefactorRewrite):
        for fix in _input_pragma_fixes(target, span):
            actions += _action(target, fix, types.CodeActionKind.RefactorRewrite, None, preferred=False)
    offers = await asyncio.get_running_loop().run_in_executor(None, target.offers, span)
    lazy = _client_resolves_edits(ls)
    for offer in offers:
        if not _wants(wanted, offer.kind):
            continue
        action = types.CodeAction(title=offer.title, kind=offer.kind,
                                   data={"uri": uri, "version": target.version, "offer": offer.id,
                                         "range": [span.start.line, span.start.col, span.end.line, span.end.col]})
        actions.append(action if lazy else await resolve_scaffold(ls, action, target))
    return actions


async def resolve_scaffold(ls: "TorchLanguageServer", action: types.CodeAction,
                           target: Target | None = None) -> types.CodeAction:
    data = action.data if isinstance(action.data, dict) else {}
    uri, offer_id = data.get("uri"), data.get("offer")
    if target is None and isinstance(uri, str):
        target = await target_for(ls, uri)
    if target is None or offer_id is None or data.get("version") != target.version:
        return action  # stale or unknown: no edit rather than a wrong one
    r = data.get("range", [0, 0, 0, 0])
    span = Span(Position(r[0], r[1]), Position(r[2], r[3]))
    fix = await asyncio.get_running_loop().run_in_executor(None, target.build, offer_id, span)
    if fix is not None:
        action.edit = target.workspace_edit(fix)
    return action


def _action(target: Target, fix: Fix, kind, diagnostic, preferred=None) -> list[types.CodeAction]:
    """The fix as a code action (none when its edits cannot be made, e.g. across cells)."""
    edit = target.workspace_edit(fix)
    if edit is None:
        return []
    return [types.CodeAction(title=fix.title, kind=kind, diagnostics=[diagnostic] if diagnostic else None,
                             is_preferred=fix.preferred if preferred is None else preferred, edit=edit)]


def _input_pragma_fixes(target: Target, span: Span) -> list[Fix]:
    """On a module class's `class` or `def forward` line: pin the example input torch-lsp
    synthesized as a `# torch-lsp: input` pragma, or offer one to fill in when there is none."""
    from torch_lsp.analysis.modules import module_facts
    from torch_lsp.analysis.stated_inputs import example_pragma, pragma_fix
    from torch_lsp.analysis.syntax import parse
    from torch_lsp.shapes import synthesized_view

    parsed = parse(target.source)  # cached: the analysis parsed this text
    for cls in module_facts(parsed).classes.values():
        if cls.forward is None or not cls.node.lineno <= cls.forward.lineno <= cls.node.end_lineno:
            continue  # no forward, or one inherited from another class
        class_line, forward_line = cls.node.lineno - 1, cls.forward.lineno - 1
        if span.start.line not in (class_line, forward_line):
            continue
        report = target.shape_report
        entry = synthesized_view.entry_at(report, class_line) if report is not None else None
        if entry is not None and not synthesized_view.pragma(entry):
            return []  # its inputs cannot be written as a pragma (an object, a tuple)
        if entry is not None:
            fix = pragma_fix(parsed.lines, forward_line, synthesized_view.pragma(entry),
                             f"Pin the synthesized input of {cls.name}: {synthesized_view.pragma(entry)[2:]}")
        else:
            fix = pragma_fix(parsed.lines, forward_line, example_pragma(cls.forward),
                             f"State the input of {cls.name} (# torch-lsp: input ...)")
        return [fix] if fix is not None else []
    return []


def _suppression_fix(code: str, line: int, text: str) -> Fix:
    """Add `code` to the line's `# torch-lsp: ignore[...]` comment, or append one."""
    existing = suppressed_codes(text)
    if existing:
        start = text.index("ignore[") + len("ignore[")
        end = text.index("]", start)
        edit = TextEdit(Span(Position(line, end), Position(line, end)), f", {code}")
    else:
        at = Position(line, len(text))
        edit = TextEdit(Span(at, at), f"  # torch-lsp: ignore[{code}]")
    return Fix(f"Suppress {code} on this line", (edit,), preferred=False)


def _matching_diagnostic(params: types.CodeActionParams, finding, target: Target) -> types.Diagnostic | None:
    for diagnostic in params.context.diagnostics:
        if diagnostic.code == finding.code and diagnostic.source == "torch-lsp" and \
                target.program_span(diagnostic.range).start.line == finding.span.start.line:
            return diagnostic
    return None


def _wants(only: list[str] | None, kind: str) -> bool:
    return not only or any(kind == k or kind.startswith(f"{k}.") for k in only)


def _client_resolves_edits(ls) -> bool:
    caps = ls.client_capabilities.text_document
    action_caps = caps.code_action if caps else None
    support = action_caps.resolve_support if action_caps else None
    return bool(support and "edit" in support.properties)

