"""The model summary (like torchinfo's), from a ShapeReport: no torch, so the server and the CLI
render it without running anything again.

One row per module *instance call* in call order, nested to `depth` (torchinfo's default 3):
layer, input shape, output shape, parameters, trainable, mult-adds. The rows come from the
module-call tree (`report.extras["modules"]`, recorded by global module hooks, so library
models show their layers) and the FLOP counts (`report.extras["flops"]`).

Counting follows torchinfo: a row whose children are shown counts only the parameters it holds
itself (`--` if none); a row shown without its children (a leaf, or the depth limit) counts its
whole subtree, so the column adds up to the total. A module called again (a shared layer, the
model called in evaluation after training) is listed as `(repeat)` and not counted twice.
Mult-adds are torch's FlopCounterMode forward FLOPs / 2 (see docs/shapes.md for how that relates
to torchinfo's parameter-based estimate).

A report without the tree (an older worker) falls back to the layer calls the tracer saw.
"""

from __future__ import annotations

from typing import Any, Callable

from torch_lsp.shapes.cost_view import batch_of, call_flops, extras, format_flops, shape_text

DEFAULT_DEPTH = 3
_HEADER = ["layer", "input shape", "output shape", "parameters", "trainable", "mult-adds"]


def model_summary(report: Any, lines: list[str], place: Callable[[int], str] | None = None,
                  depth: int = DEFAULT_DEPTH, file: str | None = None) -> dict:
    """`place(line)` names a 0-based line of the report (a notebook's `cell 3:7`); default: the
    1-based line number. `file`: only the models called from that file."""
    found = extras(report)
    modules = found.get("modules")
    if not modules:
        return _legacy_summary(report, lines, place)
    rows = summary_rows(modules, found.get("flops") or {}, depth, file, place)
    return {"device": getattr(report, "device", "meta"), "depth": depth, "rows": rows,
            "totals": _totals(modules, found.get("flops") or {}, rows),
            "markdown": render_markdown(rows, modules, found.get("flops") or {}, report, place)}


def summary_rows(modules: dict, flops: dict, depth: int = DEFAULT_DEPTH, file: str | None = None,
                 place: Callable[[int], str] | None = None) -> list[dict]:
    tree = modules["rows"]
    children: dict[int, list[dict]] = {}
    for row in tree:
        if row["parent"] is not None:
            children.setdefault(row["parent"], []).append(row)
    out: list[dict] = []
    for root in tree:
        if root["parent"] is None and not root["repeat"] and (file is None or root.get("file") in (None, file)):
            _walk(root, children, depth, flops, out, place)
    return out


def _walk(row: dict, children: dict[int, list[dict]], depth: int, flops: dict, out: list[dict], place) -> None:
    kids = children.get(row["index"], [])
    expanded = bool(kids) and row["depth"] < depth and not row["repeat"]
    forward, backward = call_flops(flops, row["index"])
    if expanded:  # the children's rows carry their own counts
        params = row["params_own"]
        forward -= sum(call_flops(flops, kid["index"])[0] for kid in kids)
        backward -= sum(call_flops(flops, kid["index"])[1] for kid in kids)
    else:
        params = row["params"]
    out.append({
        "index": row["index"], "depth": row["depth"], "parent": row["parent"], "name": row["name"],
        "class": row["class"], "layer": row["layer"],
        "line": _line(row.get("line"), place),
        "input": [shape_text(value) for value in row.get("inputs") or []],
        "output": shape_text(row.get("output")),
        "params": None if row["repeat"] else params,
        "trainable": _trainable(row),
        "mult_adds": None if row["repeat"] else forward // 2,
        "flops_forward": forward, "flops_backward": backward,
        "repeat": row["repeat"], "failed": row["failed"], "expanded": expanded, "batch": batch_of(row),
    })
    if expanded:
        for kid in kids:
            _walk(kid, children, depth, flops, out, place)


def _line(line: int | None, place) -> int | str | None:
    if line is None:
        return None
    return place(line) if place else line + 1


def _trainable(row: dict) -> str:
    if not row["params"]:
        return "--"
    if row["trainable"] == row["params"]:
        return "True"
    return "False" if row["trainable"] == 0 else "Partial"


def _totals(modules: dict, flops: dict, rows: list[dict]) -> dict:
    totals = dict(modules.get("totals") or {})
    # One call per model: the training step's (flops["roots"]), else each model's first call.
    roots = flops.get("roots") or [r["index"] for r in modules["rows"] if r["parent"] is None and not r["repeat"]]
    forward = sum(call_flops(flops, index)[0] for index in roots)
    backward = sum(call_flops(flops, index)[1] for index in roots)
    totals.update(mult_adds=forward // 2, flops_forward=forward, flops_backward=backward)
    return totals


# Markdown ----------------------------------------------------------------------------------------


def render_markdown(rows: list[dict], modules: dict, flops: dict, report: Any, place=None) -> str:
    errors = list(getattr(report, "errors", []) or [])
    stopped = getattr(report, "stopped", None)
    if not rows:
        reason = f" ({stopped})" if stopped else ""
        text = f"No layer calls were recorded for this file{reason}. See docs/shapes.md for what runs."
        return text + "".join(f"\n\n{_error_text(e, place)}" for e in errors) + "\n"
    out = ["| " + " | ".join(_HEADER) + " |", "| --- | --- | --- | ---: | --- | ---: |"]
    for row in rows:
        out.append("| " + " | ".join(_cells(row)) + " |")
    totals = _totals(modules, flops, rows)
    out += ["", f"Total params: {totals.get('params', 0):,} · trainable: {totals.get('trainable', 0):,} · "
                f"non-trainable: {totals.get('non_trainable', 0):,}"]
    if totals["flops_forward"]:
        batch = _batch(rows)
        work = f"Total mult-adds: {_count(totals['mult_adds'])}" + (f" at batch {batch}" if batch else "")
        work += f" · forward {format_flops(totals['flops_forward'])}"
        if totals["flops_backward"]:
            work += f" · backward {format_flops(totals['flops_backward'])}"
        out.append(work)
    if modules.get("dropped"):
        out.append(f"{modules['dropped']:,} more layer calls were not listed (the first {len(modules['rows']):,} are).")
    for error in errors:
        out += ["", _error_text(error, place)]
    if stopped and not errors:
        out += ["", f"Shape analysis stopped: {stopped}."]
    return "\n".join(out) + "\n"


def _cells(row: dict) -> list[str]:
    prefix = "│ " * max(row["depth"] - 1, 0) + ("└─ " if row["depth"] else "")
    name = f"{row['name'].rsplit('.', 1)[-1]}: " if row["name"] else ""
    label = f"{prefix}{name}{row['layer']}"
    if row["depth"] == 0 and row["line"]:
        label += f" · line {row['line']}" if isinstance(row["line"], int) else f" · {row['line']}"
    if row["repeat"]:
        label += " (repeat)"
    if row["failed"]:
        label += " **(failed)**"
    params = "(repeat)" if row["repeat"] else ("--" if not row["params"] else f"{row['params']:,}")
    mult_adds = "--" if not row["mult_adds"] else f"{row['mult_adds']:,}"
    cells = [label, ", ".join(row["input"]) or "--", row["output"] or "--", params, row["trainable"], mult_adds]
    return [_escape(cell) for cell in cells]


def _escape(text: str) -> str:
    """A table cell stays one cell: a layer's `extra_repr()` may span lines or hold a `|`."""
    return " ".join(text.splitlines()).replace("|", "\\|")


def _count(value: int) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:,}"


def _batch(rows: list[dict]) -> int | None:
    return next((row["batch"] for row in rows if row["depth"] == 0 and row["batch"] is not None), None)


def _error_text(error: Any, place=None) -> str:
    where = place(error.range.line) if place else f"line {error.range.line + 1}"
    return f"**{error.code}** ({where}): {error.message}"


# Reports without the module-call tree --------------------------------------------------------------


def _legacy_summary(report: Any, lines: list[str], place) -> dict:
    rows = []
    for expression in sorted(report.expressions, key=lambda e: (e.range.line, e.range.col)):
        if expression.module is None:
            continue
        rows.append({"line": _line(expression.range.line, place), "call": _text(lines, expression.range),
                     "layer": expression.module, "output": " | ".join(v.text() for v in expression.values),
                     "parameters": expression.parameters})
    if not rows:
        reason = f" ({report.stopped})" if report.stopped else ""
        markdown = f"No layer calls were recorded for this file{reason}. See docs/shapes.md for what runs.\n"
    else:
        out = ["| line | call | layer | output | parameters |", "| ---: | --- | --- | --- | ---: |"]
        for row in rows:
            count = "" if row["parameters"] is None else f"{row['parameters']:,}"
            out.append(f"| {row['line']} | `{row['call']}` | {row['layer']} | {row['output']} | {count} |")
        markdown = "\n".join(out) + "\n"
    return {"device": report.device, "rows": rows, "markdown": markdown}


def _text(lines: list[str], rng) -> str:
    if rng.line == rng.end_line and rng.line < len(lines):
        return lines[rng.line][rng.col:rng.end_col]
    first = lines[rng.line][rng.col:] if rng.line < len(lines) else ""
    return first.strip() + " …"
