"""The result type, the table of codes, and the fallback text (TL200)."""

from __future__ import annotations

from dataclasses import dataclass

from torch_lsp.analysis.rules.shape_errors import SHAPE_RULES  # noqa: F401 - re-exported



@dataclass(frozen=True)
class Explained:
    code: str
    message: str
    # A suggested fix in words ("build the layer as nn.Linear(256, 120)"); may be empty.
    hint: str = ""


def torch_first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if isinstance(exc, RuntimeError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
