"""What a person reads about synthesized calls (no torch, no LSP types): the hover on a probed
class and on its `forward`, and the comments `torch-lsp shapes` adds to those lines.

The facts come from the worker (`report.extras["synthesized"]`, one entry per probed class:
how it was built, each input with the symbols of its free sizes, where it came from, and the
input contract where the model pins a size).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch_lsp.shapes.report import ShapeReport


def entries(report: "ShapeReport") -> list[dict]:
    found = report.extras.get("synthesized") if report is not None else None
    return [e for e in found if isinstance(e, dict) and "inputs" in e] if isinstance(found, list) else []


def input_text(item: dict) -> str:
    """`x: [B, 3, 32, 32]` (int64 and other dtypes named); `h: ([2, B, 64], [2, B, 64])` for a
    tuple of tensors; `samples: NestedTensor(tensors=[B, 3, H, W], mask=[B, H, W] bool)`."""
    return f"{str(item.get('name')).rpartition('.')[2]}: {_value_text(item)}"


def _value_text(item: dict) -> str:
    if item.get("container") == "dict":
        entries = ", ".join(f"{str(f.get('name')).rpartition('.')[2]!r}: {_value_text(f)}" for f in item.get("fields", []))
        return "{" + entries + "}"
    if item.get("container"):
        fields = ", ".join(f"{str(f.get('name')).rpartition('.')[2]}={_value_text(f)}" for f in item.get("fields", []))
        return f"{item['container']}({fields})"
    dims = ", ".join(str(d) for d in item.get("dims", []))
    dtype = item.get("dtype", "float32")
    single = f"[{dims}]" + ("" if dtype == "float32" else f" {dtype}")
    group = int(item.get("group", 1) or 1)
    if group == 1:
        return single
    inner = ", ".join([single] * group)
    return f"[{inner}]" if item.get("listed") else f"({inner})"


def contract_text(item: dict) -> str:
    """`accepts [B, 3, 32, 32]: H = W = 32 is required by fc1`, or "" when every size is free."""
    if not item.get("contract"):
        return ""
    dims = ", ".join(str(d) for d in item.get("dims", []))
    return f"accepts [{dims}]: {item['contract']}"


def entry_at(report: "ShapeReport", line: int) -> dict | None:
    """The probe whose `class` line or `def forward` line is `line`."""
    for entry in entries(report):
        if line in (entry.get("line"), entry.get("forward_line")):
            return entry
    return None


def hover(report: "ShapeReport", line: int) -> str | None:
    """Markdown for the class line or the forward line of a synthesized call."""
    entry = entry_at(report, line)
    if entry is None:
        return None
    stated = all(item.get("stated") for item in entry["inputs"]) and entry["inputs"]
    # A call is made only for a class no run reached: nothing calls it, or its driver stopped first.
    how = "stated inputs" if stated else "synthesized inputs (no script's run reached this class)"
    lines = [f"Shapes from a call torch-lsp made: `{entry.get('built_as', '')}` with {how}:"]
    for item in entry["inputs"]:
        text = f"- `{input_text(item)}`"
        if item.get("source"):
            text += f", from {item['source']}"
        if item.get("contract"):
            text += f"; {contract_text(item)}"
        lines.append(text)
    if not stated and pragma(entry):
        lines.append("\nTo choose the input yourself, write a pragma on the class or forward line: "
                     f"`{pragma(entry)}` (code action: *Pin the synthesized input*).")
    return "\n".join(lines)


def pragma(entry: dict) -> str:
    """The pragma that pins the entry's inputs; "" when none of them can be written as one (an
    object such as a `NestedTensor`, a tuple of tensors)."""
    from torch_lsp.analysis.stated_inputs import pragma_text

    text = pragma_text(entry.get("inputs", []))
    return "" if text.rstrip().endswith("input") else text


def comments(report: "ShapeReport") -> dict[int, str]:
    """Line -> comment text for `torch-lsp shapes`: on the class line, how it was called; on the
    forward line, where each input came from and the contract."""
    out: dict[int, str] = {}
    for entry in entries(report):
        stated = all(item.get("stated") for item in entry["inputs"])
        out[entry["line"]] = f"torch-lsp: called {entry.get('built_as', '')}, " \
                             f"{'stated' if stated else 'synthesized'} inputs"
        forward = entry.get("forward_line")
        if forward is not None:
            parts = []
            for item in entry["inputs"]:
                part = f"{item.get('name')} from {item.get('source')}" if item.get("source") else ""
                if item.get("contract"):
                    part += f" ({contract_text(item)})"
                if part:
                    parts.append(part.strip())
            if parts:
                out[forward] = "; ".join(parts)
    return out
