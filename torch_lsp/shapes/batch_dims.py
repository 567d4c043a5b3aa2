"""The batch dimension of a script's DataLoader batches, by name (stdlib only: both sides).

A script's shapes come from the batches its DataLoaders yield: `Tensor[64, 10]` after the model,
where 64 is the loader's `batch_size`. A dimension is shown by name only if it truly follows the
batch: the document's driver runs again in a background job whose loaders yield one sample more
per batch, and a dimension that is 64 in the first run and 65 in the second (or 128 and 130) is
the batch. It is named after the loader's `batch_size` expression when that is a variable
(`batch_size`, `args.batch_size` -> `batch_size`), else `B`. Errors and stops of the second
run are never shown: its batch size is ours.

- worker side: `loader_made(loader)` notes each DataLoader's batch size and where it was built
  (`extras["loaders"]`); `extra_samples()` is how many samples the loaders add per batch (the
  job's `options["batch_variant"]`);
- server side: `variant_spec(spec)` for the second run, `name_batch_dims(report, variant,
  loaders, sources)` for the result.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch_lsp.shapes.report import ShapeReport, Value
    from torch_lsp.shapes.spec import JobSpec

OPTION = "batch_variant"  # JobSpec.options key: samples added to every loader's batch
KIND = "loaders"  # report.extras key: [{"line": int, "batch_size": int}] per file


# -- worker side ----------------------------------------------------------------------------------


def extra_samples() -> int:
    from torch_lsp.shapes import context

    job = context.current()
    return int(job.spec.options.get(OPTION, 0) or 0) if job is not None else 0


def loader_made(loader) -> None:
    """Note a DataLoader built by the user's code: its batch size, at the line building it."""
    from torch_lsp.shapes import context

    job = context.current()
    size = getattr(loader, "batch_size", None)
    where = job.user_line() if job is not None else None
    if where is None or not isinstance(size, int) or size < 2:
        return
    path, line = where
    found = job.facts.setdefault(KIND, {}).setdefault(path, [])
    entry = {"line": line, "batch_size": size}
    if entry not in found:
        found.append(entry)


# -- server side ----------------------------------------------------------------------------------


def variant_spec(spec: "JobSpec", key: str) -> "JobSpec":
    """The driver's job again, its loaders' batches one sample larger, in the background."""
    return replace(spec, key=key, options={**spec.options, OPTION: 1}, observers=[], background=True)


def loaders_of(reports: dict[str, "ShapeReport"]) -> dict[str, list[dict]]:
    return {path: list(r.extras.get(KIND) or []) for path, r in reports.items() if r.extras.get(KIND)}


def symbols(loaders: dict[str, list[dict]], sources: dict[str, str]) -> dict[int, str]:
    """Batch size -> its name: the loader's `batch_size` expression when it is a variable (or
    an attribute such as `args.batch_size`: its last part), else `B`; one name per size. A name
    that two sizes would share (a training loader of 64 and a test loader of 1000, both literal)
    is not used: `Tensor[B] | Tensor[B]` would hide that they differ, the numbers do not."""
    out: dict[int, str] = {}
    for path, found in loaders.items():
        lines = (sources.get(path) or "").splitlines()
        for entry in found:
            name = _batch_size_name(lines, int(entry["line"])) or "B"
            size = int(entry["batch_size"])
            if out.get(size, name) != name:
                name = "B"  # two loaders of one size, named differently: the neutral name
            out[size] = name
    shared = {name for name in out.values() if list(out.values()).count(name) > 1}
    return {size: name for size, name in out.items() if name not in shared}


def _batch_size_name(lines: list[str], line: int) -> str | None:
    """The name in `DataLoader(..., batch_size=NAME)` on `line` (or the statement from it)."""
    for end in range(line, min(line + 8, len(lines))):
        text = "\n".join(lines[line:end + 1]).strip()
        try:
            tree = ast.parse(text if not text.endswith(":") else text + " pass")
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            given = [k.value for k in node.keywords if k.arg == "batch_size"]
            if not given and _callee(node).endswith("DataLoader"):
                given = node.args[1:2]  # DataLoader(dataset, batch_size): only the loader's own
            if given and isinstance(given[0], ast.Name):
                return given[0].id
            if given and isinstance(given[0], ast.Attribute):
                return given[0].attr
            if given:
                return None  # a literal or an expression: no name
        return None
    return None


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def name_batch_dims(report: "ShapeReport", variant: "ShapeReport | None", names: dict[int, str]) -> "ShapeReport":
    """`report` with each dimension that moved with the batch named (`batch_size`, `2*B`)."""
    if variant is None or not names:
        return report

    def moved_with_the_batch(value: "Value", other: "Value") -> tuple[str | None, ...] | None:
        shape, moved = value.shape or (), other.shape or ()
        if len(shape) != len(moved):
            return None
        dims = tuple(_dim_name(a, b, names) for a, b in zip(shape, moved))
        return dims if any(dims) else None

    return _with_dims(report, variant, moved_with_the_batch)


def _with_dims(report: "ShapeReport", other: "ShapeReport", dims_of) -> "ShapeReport":
    """`report` with names given to its tensors' dimensions by `dims_of(tensor, other's tensor
    at the same place)` (None: none). The same place: the same variable and line, or the same
    expression range, the same position in a tuple, list or object. Named tensors stay as they are."""
    other_vars = {(v.name, v.line): v.values for v in other.variables}
    other_exprs = {e.range: e.values for e in other.expressions}
    variables = [replace(v, values=_paired(v.values, other_vars.get((v.name, v.line)), dims_of)) for v in report.variables]
    expressions = [replace(e, values=_paired(e.values, other_exprs.get(e.range), dims_of)) for e in report.expressions]
    return replace(report, variables=variables, expressions=expressions)


def _paired(values: list["Value"], others: list["Value"] | None, dims_of) -> list["Value"]:
    if not others or len(others) != len(values):
        return values
    return [_pair_value(a, b, dims_of) for a, b in zip(values, others)]


def _pair_value(value: "Value", other: "Value", dims_of) -> "Value":
    if value.kind != other.kind or len(value.items) != len(other.items):
        return value
    if value.kind != "tensor":
        return replace(value, items=tuple(_pair_value(a, b, dims_of) for a, b in zip(value.items, other.items)))
    dims = dims_of(value, other) if value.dims is None else None
    return replace(value, dims=dims) if dims else value


def _dim_name(size: int, moved: int, names: dict[int, str]) -> str | None:
    """`batch_size` when size is a loader's batch and moved is one more; `k*batch_size` when
    size is k batches and moved k more."""
    if moved == size:
        return None
    for batch, name in names.items():
        if size % batch == 0 and moved - size == size // batch:
            k = size // batch
            return name if k == 1 else f"{k}*{name}"
    return None


def naming(driver: dict[str, "ShapeReport"], spec: "JobSpec") -> tuple[dict[int, str], dict[str, str]]:
    """The names of the driver's batch sizes (`symbols`), and the texts the job ran by path."""
    loaders = loaders_of(driver)
    sources = {spec.main.filename: spec.main.source, **spec.overlay}
    for path in loaders.keys() - sources.keys():
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                sources[path] = file.read()
        except OSError:
            pass
    return symbols(loaders, sources), sources


# -- names carried to the next version (server side) ---------------------------------------------


class LastNames:
    """Per document: the reports its last batch-naming run named, the texts they describe and
    the names it used. The naming run is a background job, which waits while other documents'
    drivers do (scheduling.background_may_start): typed into among many, a document's newest
    driver report would show bare numbers until typing pauses, and even alone each version's
    names blinked out for the time of its naming run. So a new driver report takes the last
    names where nothing they rest on changed: the same loaders with the same names, a value
    on a line not edited since (moved with the lines above it), with the same shape and dtype."""

    def __init__(self) -> None:
        self._by_key: dict[str, tuple[dict[int, str], dict[str, tuple[tuple[str, ...], "ShapeReport"]]]] = {}

    def name(self, key: str, merged: dict[str, "ShapeReport"], driver: dict[str, "ShapeReport"],
             variant: dict[str, "ShapeReport"], spec: "JobSpec") -> dict[str, "ShapeReport"]:
        """The merged reports with the driver's batch dimensions named from its naming run
        `variant` (lines a synthesized call gave shapes are left as they are: their values are
        not the driver's), and remembered for the document's next versions."""
        names, sources = naming(driver, spec)
        named = {path: name_batch_dims(report, variant[path], names) if path in variant else report
                 for path, report in merged.items()}
        if names:
            self._by_key[key] = (names, {path: (tuple(sources[path].splitlines()), report)
                                         for path, report in named.items() if path in sources})
        else:
            self._by_key.pop(key, None)
        return named

    def carry(self, key: str, reports: dict[str, "ShapeReport"], spec: "JobSpec | None") -> dict[str, "ShapeReport"]:
        """`reports` (a driver's, not yet named) with the names of the last naming run."""
        before = self._by_key.get(key)
        if before is None or spec is None:
            return reports
        names, sources = naming(reports, spec)
        if names != before[0]:
            return reports
        from torch_lsp.analysis.line_moves import LineMap
        from torch_lsp.shapes.moved import moved_report

        out = dict(reports)
        for path, report in reports.items():
            then, text = before[1].get(path), sources.get(path)
            if then is None or text is None:
                continue
            lines_then, named = then
            lines_now = tuple(text.splitlines())
            if lines_now != lines_then:
                named = moved_report(named, LineMap.between(lines_then, lines_now))
            out[path] = carry_names(report, named)
        return out

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)


def carry_names(report: "ShapeReport", named: "ShapeReport") -> "ShapeReport":
    """`report` with the dimension names of `named` (the same text's lines) where a value has
    the same shape and dtype there."""
    return _with_dims(report, named, lambda value, then: then.dims if (value.shape, value.dtype) == (then.shape, then.dtype)
                      else None)
