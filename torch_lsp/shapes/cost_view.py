"""What the cost observers' results look like to a person (no torch, no LSP types).

Reads `report.extras`: "modules" (the module-call tree), "flops" (FLOPs per call and per line)
and "memory" (the training step's peak), and renders hover text, code-lens titles and the
per-line FLOP totals of `torch-lsp shapes`. Lines are 0-based, as everywhere in analysis.
"""

from __future__ import annotations

from typing import Any

GIB = 1 << 30
MIB = 1 << 20
# What a training step's GPU memory is made of (memory.py classifies each storage).
MEMORY_CATEGORIES = ("weights", "buffers", "grads", "optimizer", "activations", "other", "workspace")


def extras(report: Any) -> dict:
    return getattr(report, "extras", None) or {}


# numbers -----------------------------------------------------------------------------------------


_UNITS = (("GiB", GIB), ("MiB", MIB), ("KiB", 1024))


def byte_unit(nbytes: float) -> tuple[str, int]:
    for unit, size in _UNITS:
        if nbytes >= size:
            return unit, size
    return "B", 1


def format_bytes(nbytes: float) -> str:
    """`3.1 GiB`, `250 MiB`, `12 KiB`: three significant figures at most."""
    unit, size = byte_unit(nbytes)
    return f"{_significant(nbytes / size)} {unit}" if size > 1 else f"{int(nbytes)} B"


def format_in(nbytes: float, size: int) -> str:
    """`0.10`, `2.7`: a part of a total, in the total's unit (without it)."""
    value = nbytes / size
    return f"{value:.2f}" if value < 1 else _significant(value)


def format_flops(flops: float) -> str:
    """`0.35 GFLOP`, `12 MFLOP`, `1.2 TFLOP`."""
    for unit, size in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if flops >= size * 0.1 and (unit != "kFLOP" or flops >= size):
            return f"{_significant(flops / size)} {unit}"
    return f"{int(flops)} FLOP"


def _significant(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}".removesuffix(".0")
    return f"{value:.2f}".rstrip("0").rstrip(".")


def shape_text(described: Any) -> str:
    """Worker shape descriptions ({"shape": [...]}, {"items": [...]}) -> `[8, 3, 32, 32]`."""
    if not isinstance(described, dict):
        return ""
    if "shape" in described:
        return "[" + ", ".join(str(d) for d in described["shape"]) + "]"
    if "items" in described:
        return "(" + ", ".join(shape_text(item) for item in described["items"]) + ")"
    if "keys" in described:
        return "{" + ", ".join(f"{k}: {shape_text(v)}" for k, v in described["keys"].items()) + "}"
    return ""


# FLOPs -------------------------------------------------------------------------------------------


def call_flops(flops: dict, index: int) -> tuple[int, int]:
    found = (flops.get("calls") or {}).get(str(index)) or {}
    return found.get("forward", 0), found.get("backward", 0)


def flops_hover(report: Any, line: int, col: int, file: str | None = None) -> str | None:
    """`conv1: 0.35 GFLOP fwd / 0.70 bwd at B = 8` for the module call under the cursor."""
    found = extras(report)
    modules, flops = found.get("modules"), found.get("flops")
    if not modules or not flops:
        return None
    calls = _calls_at(modules["rows"], line, col, file)
    if not calls:
        return None
    # The same call expression runs once per call of the model: show the training step's call
    # (the one with backward FLOPs) when there is one.
    row = next((r for r in calls if call_flops(flops, r["index"])[1]), calls[0])
    forward, backward = call_flops(flops, row["index"])
    if not forward and not backward:
        return None
    name = row["name"].rsplit(".", 1)[-1] if row["name"] else row["class"]
    text = f"{name}: {format_flops(forward)} fwd"
    if backward:
        text += f" / {format_flops(backward).split()[0]} bwd"
    batch = batch_of(row)
    return text + (f" at B = {batch}" if batch is not None else "")


def _calls_at(rows: list[dict], line: int, col: int, file: str | None) -> list[dict]:
    """The module calls of the innermost call expression containing the position (outermost
    module first: `model(x)` is the model, not its first layer), in call order."""
    hits = []
    for row in rows:
        rng = row.get("range")
        if not rng or (file is not None and row.get("file") not in (None, file)):
            continue
        if (rng[0], rng[1]) <= (line, col) <= (rng[2], rng[3]):
            hits.append(row)
    if not hits:
        return []
    innermost = min(_span(r["range"]) for r in hits)
    hits = [r for r in hits if _span(r["range"]) == innermost]
    top = min(r["depth"] for r in hits)
    return [r for r in hits if r["depth"] == top]


def _span(rng: list[int]) -> tuple[int, int]:
    return (rng[2] - rng[0], rng[3] - rng[1] if rng[0] == rng[2] else 10**6)


def batch_of(row: dict) -> int | None:
    inputs = row.get("inputs") or []
    first = inputs[0] if inputs else None
    if isinstance(first, dict) and first.get("shape"):
        return first["shape"][0]
    return None


def line_flops(report: Any, file: str | None = None) -> dict[int, tuple[int, int]]:
    """0-based line -> (forward, backward) FLOPs of the ops that line ran."""
    flops = extras(report).get("flops") or {}
    out: dict[int, tuple[int, int]] = {}
    for entry in flops.get("lines", []):
        if file is None or entry.get("file") == file:
            out[entry["line"]] = (entry.get("forward", 0), entry.get("backward", 0))
    return out


def line_flops_text(forward: int, backward: int) -> str:
    return f"{format_flops(forward)} fwd" + (f" / {format_flops(backward)} bwd" if backward else "")


def class_lens_title(row: dict, report: Any = None, forward_line: int | None = None,
                     returned: tuple[int, int, str | None] | None = None) -> str:
    """`62,006 params · [B, 3, 32, 32] → [B, 10]`: the first call of a module class, with the
    dimension names the report knows (free sizes found by synthesized calls), else the sizes.
    `forward_line`: the `def forward` line; `returned`: (line, column, name if a bare name) of
    forward's returned expression."""
    inputs = _named_inputs(report, forward_line) or ", ".join(shape_text(v) for v in row.get("inputs") or [])
    output = _named_output(report, row, forward_line, returned) or shape_text(row.get("output"))
    shapes = f" · {inputs} → {output}" if inputs and output else ""
    return f"{row['params']:,} params{shapes}"


def _named_inputs(report: Any, forward_line: int | None) -> str | None:
    """The forward's tensor parameters as recorded on its `def` line (`[B, 3, 32, 32]`)."""
    if report is None or forward_line is None:
        return None
    values = [v.values[0] for v in getattr(report, "variables", []) if v.line == forward_line and v.values]
    tensors = [v for v in values if v.kind == "tensor"]
    if not tensors or not any(v.symbolic for v in tensors):
        return None
    return ", ".join(f"[{v.dims_text()}]" for v in tensors)


def _named_output(report: Any, row: dict, forward_line: int | None, returned) -> str | None:
    """The output with its dimension names: at the call (a call in the file), else what forward
    returns (a synthesized call has no call expression in the file): the returned expression,
    or the last binding of the returned name."""
    if report is None or not hasattr(report, "expression_at"):
        return None
    values = []
    if row.get("range"):
        found = report.expression_at(row["range"][0], row["range"][1])
        values += found.values[:1] if found is not None else []
    if returned is not None:
        line, col, name = returned
        if name is None:
            found = report.expression_at(line, col)
            values += found.values[:1] if found is not None else []
        else:
            bound = [v for v in report.variables if v.name == name and (forward_line or 0) <= v.line < line]
            values += max(bound, key=lambda v: v.line).values[-1:] if bound else []
    for value in values:
        if value.kind == "tensor" and value.symbolic:
            return f"[{value.dims_text()}]"
    return None


# memory ------------------------------------------------------------------------------------------

_OPTIMIZER_NAMES = {"SGD": "SGD momentum"}


def memory_title(memory: dict) -> str | None:
    """`step peak ≈ 3.1 GiB at batch 128 (weights 0.10, grads 0.10, Adam 0.20, activations 2.7)`."""
    if not memory or "peak" not in memory:
        return None
    split = memory.get("breakdown") or {}
    what = "step peak" if memory.get("training") else "forward peak"
    batch = f" at batch {memory['batch']}" if memory.get("batch") else ""
    _, size = byte_unit(memory["peak"])
    parts = [f"weights {format_in(split.get('weights', 0) + split.get('buffers', 0), size)}"]
    if memory.get("training"):
        parts.append(f"grads {format_in(split.get('grads', 0), size)}")
        if split.get("optimizer"):
            parts.append(f"{_optimizer_label(memory)} {format_in(split['optimizer'], size)}")
    parts.append(f"activations {format_in(split.get('activations', 0), size)}")
    for extra in ("other", "workspace"):
        if split.get(extra, 0) >= 0.05 * memory["peak"]:
            parts.append(f"{extra} {format_in(split[extra], size)}")
    return f"{what} ≈ {format_bytes(memory['peak'])}{batch} ({', '.join(parts)})"


def _optimizer_label(memory: dict) -> str:
    kinds = sorted({step["type"] for step in memory.get("optimizers", [])})
    return "/".join(_OPTIMIZER_NAMES.get(kind, kind) for kind in kinds) or "optimizer"


def memory_hover(memory: dict, fit: dict | None = None) -> str | None:
    """Markdown for a hover on the training loop."""
    title = memory_title(memory)
    if title is None:
        return None
    lines = [f"**{title}**", ""]
    phase = memory.get("phase")
    if phase:
        lines.append(f"Peak reached during: {phase}. GPU memory as CUDA's caching allocator counts it "
                     "(`torch.cuda.max_memory_allocated()`), estimated on meta.")
    for note in memory.get("notes", []):
        lines.append(f"- {note}")
    if fit and fit.get("largest_batch") is not None:
        lines.append(f"- largest batch that fits in {fit['capacity_gb']:g} GB: **{fit['largest_batch']}**")
    lines.append("\n`torch-lsp memory FILE` (command `torch-lsp.memory`) shows the layers and the batch limit.")
    return "\n".join(lines)
