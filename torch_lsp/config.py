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

from torch_lsp.settings_model import Section, SettingError, camel, setting

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECTION = "torchLsp"


@dataclass
class RuleSettings(Section):
    select: list[str] = setting(factory=lambda: ["TL"], description="Rule codes or prefixes to enable (`TL` = every rule that is on by default; name a code to turn on one that is off by default).")
    ignore: list[str] = setting(factory=list, description="Rule codes or prefixes to disable; wins over `select`.")
    severity: dict[str, Literal["error", "warning", "info", "hint"]] = setting(factory=dict, description="Override the severity of a rule, e.g. `{\"TL111\": \"warning\"}`.")


@dataclass
class ExecutionSettings(Section):
    enabled: bool = setting(True, description="Run model and tensor code (on the meta device by default) to infer shapes. Off: static features only; nothing of the user's code runs.")
    device: Literal["meta", "cpu", "cuda", "auto"] = setting("meta", description="Device for shape inference: `meta` computes shapes without data; `cpu`/`cuda` run real kernels on small inputs; `auto` is cuda when available, else meta.")
    timeout: float = setting(5.0, gt=0, le=300, description="Seconds a shape job may run before it is stopped.")
    memory_mb: int = setting(4096, ge=256, description="Memory limit (MiB) of a shape job: its address space on `meta`/`cpu`, its resident memory on every device.")
    synthesize: bool = setting(True, description="Give shapes to module classes that nothing in the workspace calls: build each from what the code gives (defaults, config classes, construction sites) and call it with an example input found from its first layers (see docs/shapes.md).")
    python: str | None = setting(None, description="Interpreter that runs shape analysis (the project's, with torch installed): a python executable or an environment folder, relative to the workspace. Default: the workspace's `.venv`/`venv`, else the active `VIRTUAL_ENV`/conda environment, else torch-lsp's own.")


@dataclass
class InlayHintSettings(Section):
    enabled: bool = setting(True, description="Show tensor shapes as inlay hints after assignments.")


@dataclass
class TrainingSettings(Section):
    python: str | None = setting(None, description="Interpreter for training runs (default: the server's own).")
    runs_dir: str = setting(".torch-lsp/runs", description="Where training runs are stored, relative to the workspace root.")


@dataclass
class ShapesSettings(Section):
    costs: bool = setting(True, description="Count FLOPs per layer and line and a training step's peak GPU memory during each shape run (model summary, hover, code lenses). Off: shapes only, a little faster.")
    gpu_memory_gb: float | None = setting(None, gt=0, le=4096, description="GPU memory (GiB, as `nvidia-smi` shows it / 1024) for the largest batch that fits (`torch-lsp memory`, the training loop's hover). Default: the local GPU's, when one is visible.")
    inputs: dict[str, dict[str, str]] = setting(factory=dict, description="Example inputs per module class, for classes nothing calls: `{\"Net\": {\"x\": \"[B, 3, 32, 32]\"}}` (a dtype may follow the brackets: `\"[B, T] int64\"`). A `# torch-lsp: input` pragma or a jaxtyping annotation in the code wins over this.")
    argv: list[str] = setting(factory=list, description="Command-line arguments (`sys.argv[1:]`) a script gets when torch-lsp runs it for shapes.")
    env: dict[str, str] = setting(factory=dict, description="Environment variables set when torch-lsp runs a script for shapes.")


@dataclass
class Settings(Section):
    rules: RuleSettings = setting(factory=RuleSettings)
    debounce_ms: int = setting(250, ge=0, le=10_000, description="Milliseconds to wait after the last edit before analysing; while edits keep coming, a document is analysed at most twice this after the first one.")
    execution: ExecutionSettings = setting(factory=ExecutionSettings)
    inlay_hints: InlayHintSettings = setting(factory=InlayHintSettings)
    training: TrainingSettings = setting(factory=TrainingSettings)
    shapes: ShapesSettings = setting(factory=ShapesSettings)
    docs_url: str = setting("https://github.com/torch-lsp/torch-lsp/blob/main/docs/rules.md", description="Base URL of the rules documentation, linked from each diagnostic code.")

    def rule_selection(self):
        from torch_lsp.analysis.facts import Severity
        from torch_lsp.analysis.rules.selection import RuleSelection

        return RuleSelection(tuple(self.rules.select), tuple(self.rules.ignore),
                             {code.upper(): Severity.parse(level) for code, level in self.rules.severity.items()})


def _within(limit: float):
    return lambda value: not isinstance(value, (int, float)) or isinstance(value, bool) or value <= limit


def _inside_workspace(value: Any) -> bool:
    if not isinstance(value, str):
        return True  # not a path: validation reports it
    path = Path(value)
    return not path.is_absolute() and not value.startswith("~") and ".." not in path.parts


MAX_PROJECT_ARGV = (64, 4096)  # arguments, characters in all
# Environment variables that choose which program, libraries or Python code run, or how
# torch-lsp confines them: a repository must not set these for the jobs that run its code.
_CHOOSES_CODE = re.compile(r"^(PATH|LD_.*|DYLD_.*|PYTHON.*|TORCH_LSP_.*)$", re.IGNORECASE)


def _argv_within(value: Any) -> bool:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return True  # not a list of words: validation reports it
    count, characters = MAX_PROJECT_ARGV
    return len(value) <= count and sum(map(len, value)) <= characters


def _env_allowed(value: Any) -> bool:
    return not isinstance(value, dict) or not any(_CHOOSES_CODE.match(str(name)) for name in value)


# What a repository's own pyproject.toml may ask for (anyone can commit one; opening the folder
# must not hand it more than this). The user's settings (initializationOptions,
# workspace/configuration, command-line flags) are not capped: setting a key there is how the
# user allows more. Each row: key path, the test, the value used instead (None: the lower
# layers' value), and the rule for the warning.
PROJECT_CAPS: list[tuple[tuple[str, ...], Any, Any, str]] = [
    (("execution", "timeout"), _within(10), 10.0, "at most 10 seconds"),
    (("execution", "memoryMb"), _within(8192), 8192, "at most 8192 MiB"),
    (("execution", "device"), lambda value: value in ("meta", "cpu"), None,
     "`meta` or `cpu` (a job reaches the GPU driver only if you choose a GPU device)"),
    (("training", "runsDir"), _inside_workspace, None, "a folder inside the workspace"),
    (("training", "python"), lambda value: value is None, None,
     "no interpreter (a repository must not choose the program torch-lsp starts)"),
    (("shapes", "argv"), _argv_within, None,
     f"at most {MAX_PROJECT_ARGV[0]} arguments of {MAX_PROJECT_ARGV[1]} characters in all"),
    (("shapes", "env"), _env_allowed, None,
     "variables other than PATH, LD_*, DYLD_*, PYTHON* and TORCH_LSP_* (they choose which code runs "
     "and how it is confined)"),
]


def cap_project_settings(table: dict[str, Any] | None, source: str,
                         user_layers: tuple[dict[str, Any] | None, ...] = ()) -> tuple[dict[str, Any] | None, list[str]]:
    """The project layer with values beyond PROJECT_CAPS replaced, and a warning for each that
    the user's own layers do not set anyway."""
    if not isinstance(table, dict):
        return table, []
    capped, warnings = _normalise(table), []
    users = [_normalise(layer) for layer in user_layers if isinstance(layer, dict)]
    for path, allowed, instead, rule in PROJECT_CAPS:
        value = _get(capped, list(path), default=_MISSING)
        if value is _MISSING or allowed(value):
            continue
        if any(_get(layer, list(path), default=_MISSING) is not _MISSING for layer in users):
            continue  # the user chose this value themselves: the project's is never used
        key = ".".join(path)
        capped = _drop(capped, list(path), {}) if instead is None else _deep_merge(capped, _nest(path, instead))
        using = f"using {instead!r}" if instead is not None else "ignored"
        warnings.append(f"torch-lsp: {source} sets '{key}' = {value!r}, but a project's settings may only ask for "
                        f"{rule}; {using}. Set '{key}' in your editor's settings to allow it.")
    return capped, warnings


_MISSING = object()


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


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
                Settings.validate(candidate)
                break
            except SettingError as error:
                path = [str(p) for p in error.loc if not isinstance(p, int)]
                bad = _get(candidate, path)
                fallback = _get(merged, path, default=_default_at(path))
                warnings.append(_describe(source, path, bad, error, fallback))
                candidate = _drop(candidate, path, merged)
        merged = candidate
    try:
        return Merged(Settings.validate(merged), warnings)
    except SettingError:  # cannot happen after the loop above, but never fail start-up
        return Merged(Settings(), warnings + ["torch-lsp: settings could not be validated; using defaults"])


def _describe(source: str, path: list[str], bad: Any, problem: SettingError, fallback: Any) -> str:
    key = ".".join(path)
    if problem.kind == "extra_forbidden":
        return f"torch-lsp: unknown setting '{key}' in {source}; ignored"
    return (f"torch-lsp: invalid setting '{key}' = {bad!r} in {source} ({problem.message}); "
            f"using {fallback!r}")


_VERBATIM_TABLES = {"severity", "inputs", "env"}


def _normalise(raw: dict[str, Any]) -> dict[str, Any]:
    """camelCase every key (TOML users write kebab-case; Python users snake_case)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = camel(re.sub(r"-", "_", str(key)))
        name = name[:1].lower() + name[1:]
        # Tables keyed by user names (rule codes, class and parameter names, variables) keep them.
        out[name] = _normalise(value) if isinstance(value, dict) and name not in _VERBATIM_TABLES else value
    return out


def _deep_merge(base: dict, top: dict) -> dict:
    result = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict) and key not in _VERBATIM_TABLES:
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
    return _get(Settings().to_dict(), path)


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
    table, capped = cap_project_settings(table, str(pyproject), (overrides,))
    merged = merge(("defaults", {}), (str(pyproject), table), ("the command line", overrides))
    merged.warnings[:0] = problems + capped
    return merged


def settings_reference(model: type[Section] = Settings, prefix: str = "") -> list[dict[str, Any]]:
    """Every leaf setting: dotted camelCase key, JSON type, default, description.

    docs/configuration.md's table and the VS Code extension's `contributes.configuration` are
    generated from (and tested against) this list, so they cannot drift from the code.
    """
    return model.reference(prefix)


def render_settings_table() -> str:
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for row in settings_reference():
        kind = " \\| ".join(f"`{v}`" for v in row["enum"]) if row["enum"] else row["type"]
        lines.append(f"| `{row['key']}` | {kind} | `{json.dumps(row['default'])}` | {row['description']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_settings_table(), end="")
