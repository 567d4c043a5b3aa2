"""Inputs the user states for a module's `forward` (pure: source text and settings in, facts out).

In order of precedence (the first that names a parameter wins):

1. a pragma comment on the `class` or `def forward` line:
   `# torch-lsp: input x=[B, 3, 224, 224]` (several: `x=[B, 3, 32, 32], t=[B]`; a dtype after
   the brackets: `idx=[B, T] int64`);
2. a jaxtyping / torchtyping annotation on the parameter:
   `x: Float[Tensor, "batch 3 32 32"]`, `ids: Int[torch.Tensor, "b t"]`,
   `x: TensorType["batch", 3, 32, 32]`;
3. Lightning's `example_input_array` (known only at run time: the worker reads it);
4. `[tool.torch-lsp.shapes.inputs]` in pyproject.toml: `Net = { x = "[B, 3, 32, 32]" }`.

Each stated input is `(dims, dtype, origin)`: dims are ints or names (a name is a size the
engine chooses, shown by that name).
"""

from __future__ import annotations

import ast
import re

PRAGMA = re.compile(r"#\s*torch-lsp:\s*input\s+(?P<body>.+)$")
_ASSIGNMENT = re.compile(r"(?P<name>[A-Za-z_]\w*)\s*=\s*\[(?P<dims>[^\]]*)\]\s*(?P<dtype>[A-Za-z_]\w*)?")
_DTYPES = {
    "float": "float32", "float32": "float32", "float16": "float16", "half": "float16", "bfloat16": "bfloat16",
    "float64": "float64", "double": "float64", "int": "int64", "int64": "int64", "long": "int64",
    "int32": "int32", "bool": "bool", "uint8": "uint8",
}
_JAXTYPING_DTYPES = {"Float": "float32", "Float32": "float32", "Float16": "float16", "Float64": "float64",
                     "Int": "int64", "Int64": "int64", "Int32": "int32", "Integer": "int64", "Long": "int64",
                     "Bool": "bool", "Shaped": "float32", "Real": "float32", "Num": "float32", "UInt8": "uint8"}

Stated = tuple[list, str, str]  # (dims, dtype name, origin)


def parse_dims(text: str) -> list[int | str] | None:
    """`B, 3, 224, 224` -> ["B", 3, 224, 224]; None when a dim is neither a number nor a name."""
    dims: list[int | str] = []
    for part in (p.strip() for p in re.split(r"[,\s]+", text.strip()) if p.strip()):
        if part.isdigit():
            dims.append(int(part))
        elif re.fullmatch(r"[A-Za-z_]\w*", part):
            dims.append(part)
        else:
            return None
    return dims


def pragma_inputs(line_text: str) -> dict[str, Stated]:
    """`# torch-lsp: input x=[B, 3, 32, 32], t=[B]` on one line -> {x: ..., t: ...}."""
    match = PRAGMA.search(line_text)
    if match is None:
        return {}
    out: dict[str, Stated] = {}
    for assignment in _ASSIGNMENT.finditer(match.group("body")):
        dims = parse_dims(assignment.group("dims"))
        dtype = _DTYPES.get((assignment.group("dtype") or "float32").lower())
        if dims is not None and dtype is not None:
            out[assignment.group("name")] = (dims, dtype, "pragma")
    return out


def annotation_inputs(forward: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, Stated]:
    """jaxtyping (`Float[Tensor, "b c h w"]`) and torchtyping (`TensorType["b", 3]`) parameters."""
    out: dict[str, Stated] = {}
    args = forward.args
    for arg in args.posonlyargs + args.args + args.kwonlyargs:
        stated = _annotation(arg.annotation) if arg.annotation is not None else None
        if stated is not None:
            out[arg.arg] = stated
    return out


def _annotation(node: ast.AST) -> Stated | None:
    if not isinstance(node, ast.Subscript):
        return None
    head = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", "")
    elements = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    if head in _JAXTYPING_DTYPES and len(elements) == 2 and isinstance(elements[1], ast.Constant) \
            and isinstance(elements[1].value, str):
        dims = _jaxtyping_dims(elements[1].value)
        return (dims, _JAXTYPING_DTYPES[head], "jaxtyping") if dims else None
    if head == "TensorType":
        dims: list[int | str] = []
        dtype = "float32"
        for element in elements:
            if isinstance(element, ast.Constant) and isinstance(element.value, (int, str)) and element.value != "...":
                dims.append(element.value)
            elif isinstance(element, ast.Attribute) and isinstance(element.value, ast.Name) and element.value.id == "torch":
                dtype = _DTYPES.get(element.attr, dtype)
            else:
                return None
        return (dims, dtype, "torchtyping") if dims else None
    return None


def _jaxtyping_dims(text: str) -> list[int | str] | None:
    """`"batch 3 h w"` -> ["batch", 3, "h", "w"]; variadic (`*batch`, `...`) and anonymous (`_`)
    dims are not a shape the engine can build: None."""
    dims: list[int | str] = []
    for part in text.split():
        part = part.split("=")[-1]  # `c=3` names a fixed size: use the size
        if part.isdigit():
            dims.append(int(part))
        elif re.fullmatch(r"[A-Za-z]\w*", part):
            dims.append(part)
        else:
            return None
    return dims


def configured_inputs(settings_inputs: dict | None, class_name: str) -> dict[str, Stated]:
    """`[tool.torch-lsp.shapes.inputs]`: `Net = { x = "[B, 3, 32, 32]" }` (dtype after the
    brackets, like the pragma)."""
    table = (settings_inputs or {}).get(class_name)
    if not isinstance(table, dict):
        return {}
    out: dict[str, Stated] = {}
    for name, text in table.items():
        if not isinstance(text, str):
            continue
        match = re.fullmatch(r"\s*\[(?P<dims>[^\]]*)\]\s*(?P<dtype>\w+)?\s*", text)
        dims = parse_dims(match.group("dims")) if match else None
        dtype = _DTYPES.get((match.group("dtype") or "float32").lower()) if match else None
        if dims is not None and dtype is not None:
            out[str(name)] = (dims, dtype, "pyproject.toml")
    return out


def stated_inputs(lines: list[str], cls: ast.ClassDef, forward: ast.FunctionDef | ast.AsyncFunctionDef | None,
                  settings_inputs: dict | None = None) -> dict[str, Stated]:
    """Every stated input of one class, highest precedence first wins per parameter."""
    found: dict[str, Stated] = {}
    layers = []
    pragma_lines = [cls.lineno - 1] + ([forward.lineno - 1] if forward is not None else [])
    for line in pragma_lines:
        layers.append(pragma_inputs(lines[line] if line < len(lines) else ""))
    if forward is not None:
        layers.append(annotation_inputs(forward))
    layers.append(configured_inputs(settings_inputs, cls.name))
    for layer in layers:
        for name, stated in layer.items():
            found.setdefault(name, stated)
    return found


def pragma_text(inputs: list[dict]) -> str:
    """`# torch-lsp: input x=[B, 3, 32, 32], t=[B]` for synthesized inputs (the code action)."""
    parts = []
    for item in inputs:
        if item.get("container") or int(item.get("group", 1) or 1) > 1:
            continue  # objects and tuples cannot be written in a pragma
        dims = ", ".join(str(d) for d in item["dims"])
        dtype = "" if item.get("dtype", "float32") == "float32" else f" {item['dtype']}"
        parts.append(f"{item['name']}=[{dims}]{dtype}")
    return "# torch-lsp: input " + ", ".join(parts)


def pragma_fix(lines: list[str], line: int, pragma: str, title: str):
    """A Fix that appends `pragma` to `line` (the `def forward` line), unless it has one."""
    from torch_lsp.analysis.facts import Fix, Position, Span, TextEdit

    text = lines[line] if 0 <= line < len(lines) else ""
    if PRAGMA.search(text):
        return None
    end = Position(line, len(text))
    return Fix(title, (TextEdit(Span(end, end), f"  {pragma}"),), preferred=False)


def example_pragma(forward: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """A pragma to fill in, for a class torch-lsp could not call: one entry per required
    parameter, an image-shaped example the user edits."""
    args = forward.args
    positional = (args.posonlyargs + args.args)[1:]
    required = positional[: len(positional) - len(args.defaults)]
    return "# torch-lsp: input " + ", ".join(f"{a.arg}=[B, 3, 32, 32]" for a in required)
