"""The model summary (like torchinfo's): every layer call the shape engine saw, in source order,
with the layer as constructed, its output shape and its parameter count. A view over a
ShapeReport: no torch, so the server and the CLI render it without running anything again."""

from __future__ import annotations

from torch_lsp.shapes.report import ShapeReport


def model_summary(report: ShapeReport, lines: list[str]) -> dict:
    rows = []
    for expression in sorted(report.expressions, key=lambda e: (e.range.line, e.range.col)):
        if expression.module is None:
            continue
        rows.append({
            "line": expression.range.line + 1,
            "call": _text(lines, expression.range),
            "layer": expression.module,
            "output": " | ".join(value.text() for value in expression.values),
            "parameters": expression.parameters,
        })
    return {"device": report.device, "rows": rows, "markdown": render_markdown(rows, report)}


def render_markdown(rows: list[dict], report: ShapeReport) -> str:
    if not rows:
        reason = f" ({report.stopped})" if report.stopped else ""
        return f"No layer calls were recorded for this file{reason}. See docs/shapes.md for what runs."
    out = ["| line | call | layer | output | parameters |", "| ---: | --- | --- | --- | ---: |"]
    for row in rows:
        count = "" if row["parameters"] is None else f"{row['parameters']:,}"
        out.append(f"| {row['line']} | `{row['call']}` | {row['layer']} | {row['output']} | {count} |")
    # Top-level calls only, so that a model and the layers inside it are not counted twice.
    total = sum(r["parameters"] or 0 for r in rows if not _inside_another(r))
    out.append("")
    out.append(f"Parameters of the outermost calls: {total:,} · device: {report.device}")
    return "\n".join(out) + "\n"


def _inside_another(row: dict) -> bool:
    """Whether a layer call runs inside another recorded call (so its parameters are counted there).

    The report knows source ranges, not the module tree: a `self.<layer>(...)` call is taken to
    be inside the model whose forward() makes it; every other call counts as outermost."""
    return row["call"].startswith("self.")


def _text(lines: list[str], rng) -> str:
    if rng.line == rng.end_line and rng.line < len(lines):
        return lines[rng.line][rng.col:rng.end_col]
    first = lines[rng.line][rng.col:] if rng.line < len(lines) else ""
    return first.strip() + " …"
