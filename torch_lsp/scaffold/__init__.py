"""Code actions that write training code (libcst codemods). Filled in by the scaffold modules."""

from __future__ import annotations

from dataclasses import dataclass

from torch_lsp.analysis.facts import Fix, Span


@dataclass(frozen=True)
class Offer:
    id: str
    title: str
    kind: str  # an LSP CodeActionKind value: "refactor.rewrite" or "source"


def offers(source: str, span: Span, path: str = "<buffer>") -> list[Offer]:
    return []


def build(source: str, offer_id: str, span: Span, path: str = "<buffer>") -> Fix | None:
    return None
