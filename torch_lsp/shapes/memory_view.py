"""The training step's memory as a person reads it: `torch-lsp memory` and the `torch-lsp.memory`
command (Markdown). No torch: it renders `report.extras` ("memory", "modules", "flops") and the
batch search of memory_fit.py."""

from __future__ import annotations

from torch_lsp.shapes.cost_view import (MEMORY_CATEGORIES, byte_unit, call_flops, format_bytes, format_flops,
                                        format_in, memory_title, shape_text)

CATEGORIES = MEMORY_CATEGORIES

DEFAULT_DEPTH = 2


def render(memory: dict | None, modules: dict | None, flops: dict | None, search: dict | None = None,
           capacity_gib: float | None = None, depth: int = DEFAULT_DEPTH, stopped: str | None = None) -> str:
    if not memory or "peak" not in memory:
        why = f" ({stopped})" if stopped else ""
        return f"No training step or forward pass was measured for this file{why}. See docs/shapes.md.\n"
    out = [f"**{memory_title(memory)}**", ""]
    out += _phases(memory)
    layers = _layers(memory, modules or {}, flops or {}, depth)
    if layers:
        out += ["", f"Per layer (to depth {depth}; activations: saved for backward during the layer's forward):", ""]
        out += layers
    out += ["", _limit(search, capacity_gib)]
    out += [f"- {note}" for note in memory.get("notes", [])]
    return "\n".join(line for line in out if line is not None) + "\n"


def _phases(memory: dict) -> list[str]:
    phases = memory.get("phases") or [{"name": memory.get("phase", "forward"), "peak": memory["peak"],
                                        "breakdown": memory.get("breakdown", {})}]
    _, size = byte_unit(memory["peak"])
    unit = {1 << 30: "GiB", 1 << 20: "MiB", 1 << 10: "KiB", 1: "B"}[size]
    out = [f"| phase ({unit}) | peak | " + " | ".join(CATEGORIES) + " |",
           "| --- | ---: | " + " | ".join("---:" for _ in CATEGORIES) + " |"]
    for phase in phases:
        split = phase["breakdown"]
        cells = [format_in(split.get(category, 0), size) for category in CATEGORIES]
        out.append(f"| {phase['name']} | {format_in(phase['peak'], size)} | " + " | ".join(cells) + " |")
    return out


def _layers(memory: dict, modules: dict, flops: dict, depth: int) -> list[str]:
    rows = [row for row in modules.get("rows", []) if row["depth"] <= depth and not row["repeat"]]
    if not rows:
        return []
    saved = {entry["call"]: entry["saved"] for entry in memory.get("layers", [])}
    out = ["| layer | output shape | weights | gradients | activations | forward | backward |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        indent = "│ " * max(row["depth"] - 1, 0) + ("└─ " if row["depth"] else "")
        name = f"{row['name'].rsplit('.', 1)[-1]}: " if row["name"] else ""
        weights = row.get("param_bytes", 0)
        grads = weights * row["trainable"] // row["params"] if row["params"] else 0
        forward, backward = call_flops(flops, row["index"])
        out.append(f"| {indent}{name}{row['class']} | {shape_text(row.get('output')) or '--'} | "
                   f"{_bytes(weights)} | {_bytes(grads)} | {_bytes(saved.get(row['index'], 0))} | "
                   f"{_flops(forward)} | {_flops(backward)} |")
    return out


def _bytes(nbytes: int) -> str:
    return format_bytes(nbytes) if nbytes else "--"


def _flops(count: int) -> str:
    return format_flops(count) if count else "--"


def _limit(search: dict | None, capacity_gib: float | None) -> str:
    if capacity_gib is None:
        return ("Largest batch: give the GPU's memory (`--gpu-memory 80`, setting `shapes.gpuMemoryGb`); "
                "no GPU is visible here.")
    if not search:
        return f"Largest batch that fits in {capacity_gib:g} GiB: not searched."
    found = search.get("largest_batch")
    reason = f" ({search['reason']})" if search.get("reason") else ""
    if found is None:
        return f"Largest batch that fits in {capacity_gib:g} GiB: unknown{reason}."
    curve = ""
    if "bytes_per_sample" in search:
        curve = (f": {format_bytes(search['fixed_bytes'])} + {format_bytes(search['bytes_per_sample'])} per sample, "
                 f"measured at batch {', '.join(str(b) for b, _ in search['points'])}")
    return f"**Largest batch that fits in {capacity_gib:g} GiB: {found:,}**{curve}{reason}."
