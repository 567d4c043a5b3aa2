"""Settings: one validated object merged from every place a user can configure torch-lsp.

Precedence, lowest first (later layers override earlier ones key by key):
  1. defaults (below);
  2. `[tool.torch-lsp]` in the workspace's pyproject.toml (the project's own choices);
  3. `initializationOptions` sent by the editor at start-up;
  4. `workspace/configuration`, section `torchLsp` (the editor's live settings; re-read on
     `workspace/didChangeConfiguration`).
Keys may be written camelCase (`debounceMs`), snake_case or kebab-case (`debounce-ms`, usual in
TOML). An invalid value never stops the server: the key falls back to the value of the lower
layers, and a warning names the key, the bad value and the fallback.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECTION = "torchLsp"


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              validate_assignment=True)


class RuleSettings(_Section):
    select: list[str] = Field(default_factory=lambda: ["TL"], description="Rule codes or prefixes to enable (`TL` = every rule that is on by default; name a code to turn on one that is off by default).")
    ignore: list[str] = Field(default_factory=list, description="Rule codes or prefixes to disable; wins over `select`.")
    severity: dict[str, Literal["error", "warning", "info", "hint"]] = Field(default_factory=dict, description="Override the severity of a rule, e.g. `{\"TL111\": \"warning\"}`.")


class ExecutionSettings(_Section):
    enabled: bool = Field(True, description="Run model and tensor code (on the meta device by default) to infer shapes. Off: static features only; nothing of the user's code runs.")
    device: Literal["meta", "cpu", "cuda", "auto"] = Field("meta", description="Device for shape inference: `meta` computes shapes without data; `cpu`/`cuda` run real kernels on small inputs; `auto` is cuda when available, else meta.")
    timeout: float = Field(5.0, gt=0, le=300, description="Seconds a shape job may run before it is stopped.")
    memory_mb: int = Field(4096, ge=256, description="Address-space limit (MiB) of a shape job.")


class InlayHintSettings(_Section):
    enabled: bool = Field(True, description="Show tensor shapes as inlay hints after assignments.")


class TrainingSettings(_Section):
    python: str | None = Field(None, description="Interpreter for training runs (default: the server's own).")
    runs_dir: str = Field(".torch-lsp/runs", description="Where training runs are stored, relative to the workspace root.")


class Settings(_Section):
    rules: RuleSettings = Field(default_factory=RuleSettings)
    debounce_ms: int = Field(250, ge=0, le=10_000, description="Milliseconds to wait after the last edit before analysing.")
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    inlay_hints: InlayHintSettings = Field(default_factory=InlayHintSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    docs_url: str = Field("https://github.com/torch-lsp/torch-lsp/blob/main/docs/rules.md", description="Base URL of the rules documentation, linked from each diagnostic code.")

    def rule_selection(self):
        from torch_lsp.analysis.facts import Severity
        from torch_lsp.analysis.rules.selection import RuleSelection

        return RuleSelection(tuple(self.rules.select), tuple(self.rules.ignore),
                             {code.upper(): Severity.parse(level) for code, level in self.rules.severity.items()})


@dataclass
class Merged:
    settings: Settings
    warnings: list[str] = field(default_factory=list)


def merge(*layers: tuple[str, dict[str, Any] | None]) -> Merged:
    """Merge `(source name, raw dict)` layers, lowest precedence first, into valid Settings."""
    merged: dict[str, Any] = {}
    warnings: list[str] = []
    for source, raw in layers:
        if raw is None:
            continue
        if not isinstance(raw, dict):
            warnings.append(f"torch-lsp: settings from {source} must be an object, got {type(raw).__name__}; ignored")
            continue
        candidate = _deep_merge(merged, _normalise(raw))
        for _ in range(50):  # each pass drops one bad key; a layer has far fewer keys than this
            try:
                Settings.model_validate(candidate)
                break
            except ValidationError as error:
                problem = error.errors()[0]
                path = [str(p) for p in problem["loc"] if not isinstance(p, int)]
                bad = _get(candidate, path)
                fallback = _get(merged, path, default=_default_at(path))
                warnings.append(_describe(source, path, bad, problem, fallback))
                candidate = _drop(candidate, path, merged)
        merged = candidate
    try:
        return Merged(Settings.model_validate(merged), warnings)
    except ValidationError:  # cannot happen after the loop above, but never fail start-up
        return Merged(Settings(), warnings + ["torch-lsp: settings could not be validated; using defaults"])


def _describe(source: str, path: list[str], bad: Any, problem: dict, fallback: Any) -> str:
    key = ".".join(path)
    if problem["type"] == "extra_forbidden":
        return f"torch-lsp: unknown setting '{key}' in {source}; ignored"
    return (f"torch-lsp: invalid setting '{key}' = {bad!r} in {source} ({problem['msg']}); "
            f"using {fallback!r}")


def _normalise(raw: dict[str, Any]) -> dict[str, Any]:
    """camelCase every key (TOML users write kebab-case; Python users snake_case)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        camel = to_camel(re.sub(r"-", "_", str(key)))
        camel = camel[:1].lower() + camel[1:]
        out[camel] = _normalise(value) if isinstance(value, dict) and camel != "severity" else value
    return out


def _deep_merge(base: dict, top: dict) -> dict:
    result = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict) and key != "severity":
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = value
    return result


def _get(data: Any, path: list[str], default: Any = None) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def _default_at(path: list[str]) -> Any:
    return _get(Settings().model_dump(by_alias=True), path)


def _drop(candidate: dict, path: list[str], lower: dict) -> dict:
    """Remove the bad key from `candidate`, restoring the lower layers' value if any."""
    result = dict(candidate)
    if not path:
        return dict(lower)
    if len(path) == 1:
        if path[0] in lower:
            result[path[0]] = lower[path[0]]
        else:
            result.pop(path[0], None)
        return result
    head = path[0]
    inner = result.get(head)
    if not isinstance(inner, dict):
        result[head] = lower.get(head, {}) if isinstance(lower.get(head), dict) else {}
        if not result[head]:
            result.pop(head)
        return result
    result[head] = _drop(inner, path[1:], lower.get(head, {}) if isinstance(lower.get(head), dict) else {})
    return result


def find_pyproject(start: Path) -> Path | None:
    start = start.resolve()
    for folder in [start, *start.parents] if start.is_dir() else [start.parent, *start.parent.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def read_pyproject(path: Path | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The `[tool.torch-lsp]` table of a pyproject.toml, and any problem reading it."""
    if path is None:
        return None, []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        return None, [f"torch-lsp: cannot read {path}: {error}; its [tool.torch-lsp] settings are ignored"]
    table = data.get("tool", {}).get("torch-lsp")
    return (table if isinstance(table, dict) else None), []


def load_for_path(path: Path, overrides: dict[str, Any] | None = None) -> Merged:
    """Settings for the CLI: defaults, the nearest pyproject.toml, then command-line overrides."""
    pyproject = find_pyproject(path)
    table, problems = read_pyproject(pyproject)
    merged = merge(("defaults", {}), (str(pyproject), table), ("the command line", overrides))
    merged.warnings[:0] = problems
    return merged


def settings_reference(model: type[BaseModel] = Settings, prefix: str = "") -> list[dict[str, Any]]:
    """Every leaf setting: dotted camelCase key, JSON type, default, description.

    docs/configuration.md's table and the VS Code extension's `contributes.configuration` are
    generated from (and tested against) this list, so they cannot drift from the code.
    """
    rows: list[dict[str, Any]] = []
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or to_camel(name))
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(settings_reference(annotation, key + "."))
            continue
        default = info.get_default(call_default_factory=True)
        rows.append({"key": key, "type": _json_type(annotation), "default": default,
                     "description": info.description or "", "enum": _enum_values(annotation)})
    return rows


def _json_type(annotation: Any) -> str:
    text = str(annotation)
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    if "list" in text:
        return "array"
    if "dict" in text:
        return "object"
    return "string"


def _enum_values(annotation: Any) -> list[str] | None:
    from typing import get_args, get_origin

    if get_origin(annotation) is Literal:
        return [str(v) for v in get_args(annotation)]
    return None


def render_settings_table() -> str:
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for row in settings_reference():
        kind = " \\| ".join(f"`{v}`" for v in row["enum"]) if row["enum"] else row["type"]
        lines.append(f"| `{row['key']}` | {kind} | `{json.dumps(row['default'])}` | {row['description']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_settings_table(), end="")
