"""Test harness for scaffold code actions: apply an action to a program, then run the program.

Every scaffold test follows the same path: put the cursor somewhere (`span_at`), ask which
actions are offered (`offered`), build one (`apply_action`), check the result still parses and
introduces no new TL1xx finding (`assert_no_new_findings`), then execute the program in a fresh
interpreter for a few steps on CPU (`run_program`, `run_torchrun`) and read back what it
reported (`RunResult.probes`).

Probes: a test appends code (`with_probe`) that prints lines `PROBE <name> <json>`; the harness
collects them, so a test checks what the inserted code *did* (the learning rate that torch
actually used, the checkpoint that was reloaded), not only the text that was inserted.

Small runs: programs get `EPOCHS=2`, `SAMPLES=64`, `BATCH_SIZE=16` by default; fixtures read
these from the environment. Each run has a wall-clock timeout and never downloads anything
(`TORCH_HOME` points to an empty temporary folder and `TORCH_LSP_NO_DOWNLOAD=1` is set).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from torch_lsp.analysis.facts import Fix, Position, Span, TextEdit

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "fixtures"
SCAFFOLD_FIXTURES = Path(__file__).resolve().parent / "fixtures"

SMALL_RUN_ENV = {"EPOCHS": "2", "SAMPLES": "64", "BATCH_SIZE": "16"}
PROBE_PREFIX = "PROBE "
_PROBE_LINE = re.compile(r"^PROBE (\S+) (.*)$")


# -- sources and cursors -------------------------------------------------------------------------
def fixture(name: str) -> str:
    """Source of a fixture program: tests/scaffold/fixtures/<name> first, then fixtures/<name>."""
    for folder in (SCAFFOLD_FIXTURES, FIXTURES):
        path = folder / name
        if path.exists():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(name)


def span_at(source: str, needle: str, occurrence: int = 0, *, cursor: bool = True) -> Span:
    """Where `needle` occurs in `source` (its `occurrence`-th match, 0-based).

    With `cursor=True` (the default) the span is empty and sits on the needle's first
    character, like an editor cursor; otherwise it covers the needle, like a selection.
    """
    index = -1
    for _ in range(occurrence + 1):
        index = source.find(needle, index + 1)
        if index < 0:
            raise ValueError(f"{needle!r} occurs fewer than {occurrence + 1} times")
    start = _position_of(source, index)
    end = start if cursor else _position_of(source, index + len(needle))
    return Span(start, end)


def _position_of(source: str, offset: int) -> Position:
    line = source.count("\n", 0, offset)
    line_start = source.rfind("\n", 0, offset) + 1
    return Position(line, offset - line_start)


# -- edits ---------------------------------------------------------------------------------------
def apply_edits(source: str, edits: tuple[TextEdit, ...] | list[TextEdit]) -> str:
    """Apply TextEdits the way an editor does: all ranges refer to the original text.

    Columns are code points (torch_lsp.analysis.facts). Overlapping edits are a bug in the
    action and raise.
    """
    line_starts = [0]
    for match in re.finditer("\n", source):
        line_starts.append(match.end())

    def offset(pos: Position) -> int:
        if pos.line >= len(line_starts):
            return len(source)
        return min(line_starts[pos.line] + pos.col, len(source))

    ordered = sorted(edits, key=lambda e: (offset(e.span.start), offset(e.span.end)))
    for before, after in zip(ordered, ordered[1:]):
        if offset(after.span.start) < offset(before.span.end):
            raise AssertionError(f"overlapping edits: {before} and {after}")
    result = source
    for edit in reversed(ordered):
        result = result[: offset(edit.span.start)] + edit.new_text + result[offset(edit.span.end):]
    return result


def offered(source: str, span: Span, path: str = "<buffer>") -> list[str]:
    """Ids of the actions offered at `span`."""
    from torch_lsp import scaffold

    return [offer.id for offer in scaffold.offers(source, span, path)]


def build(source: str, offer_id: str, span: Span, path: str = "<buffer>") -> Fix | None:
    from torch_lsp import scaffold

    return scaffold.build(source, offer_id, span, path)


def apply_action(source: str, offer_id: str, span: Span, path: str = "<buffer>", *,
                 require_offer: bool = True) -> str:
    """The program after applying action `offer_id` at `span`.

    Checks on the way what every action promises: it was offered there (unless
    `require_offer=False`), it built a fix, the result parses, and it is idempotent (the action
    is no longer offered at the same place, and building it again changes nothing).
    """
    import ast

    if require_offer:
        ids = offered(source, span, path)
        assert offer_id in ids, f"{offer_id!r} not offered at {span}; offered: {ids}"
    fix = build(source, offer_id, span, path)
    assert fix is not None, f"{offer_id!r} built nothing at {span}"
    result = apply_edits(source, fix.edits)
    try:
        ast.parse(result)
    except SyntaxError as error:
        raise AssertionError(f"{offer_id!r} produced invalid Python: {error}\n{number_lines(result)}") from error
    assert_idempotent(result, offer_id, path)
    return result


def assert_idempotent(result: str, offer_id: str, path: str = "<buffer>") -> None:
    """After an action, it is offered nowhere in the file and rebuilding changes nothing."""
    lines = result.splitlines() or [""]
    for line_number, text in enumerate(lines):
        # The first non-blank column of each line: where an editor cursor usually is.
        span = Span(Position(line_number, len(text) - len(text.lstrip())), Position(line_number, len(text) - len(text.lstrip())))
        ids = offered(result, span, path)
        assert offer_id not in ids, f"{offer_id!r} offered again on line {line_number + 1} after applying it"
        again = build(result, offer_id, span, path)
        if again is not None:
            assert apply_edits(result, again.edits) == result, f"{offer_id!r} changes the file again on line {line_number + 1}"


def inserted_text(before: str, after: str) -> str:
    """The lines `after` has that `before` lacks, in order (for snapshot tests)."""
    added = [line for tag, line in _line_diff(before, after) if tag == "+"]
    return "\n".join(added) + ("\n" if added else "")


def assert_preserved(before: str, after: str) -> None:
    """Every line of `before` is still in `after`, in order (edits only insert or touch lines)."""
    removed = [line for tag, line in _line_diff(before, after) if tag == "-"]
    assert len(removed) <= max(3, len(before.splitlines()) // 10), f"too many lines changed: {removed}"


def _line_diff(before: str, after: str) -> list[tuple[str, str]]:
    """('+', line) / ('-', line) for lines added / removed, by a plain longest-match diff."""
    import difflib

    old, new = before.splitlines(), after.splitlines()
    changes: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            changes += [("-", line) for line in old[i1:i2]]
        if tag in ("replace", "insert"):
            changes += [("+", line) for line in new[j1:j2]]
    return changes


# -- torch-lsp's own rules -----------------------------------------------------------------------
def training_findings(source: str, prefix: str = "TL1") -> list[tuple[str, str]]:
    """(code, source line) of every finding with `prefix` (position-independent, for diffs)."""
    from torch_lsp.analysis.check import analyze_source

    analysis = analyze_source(source)
    assert analysis.ok, f"does not parse: {analysis.failure}"
    lines = source.splitlines()
    return sorted(
        (f.code, lines[f.span.start.line].strip() if f.span.start.line < len(lines) else "")
        for f in analysis.findings
        if f.code.startswith(prefix)
    )


def assert_no_new_findings(before: str, after: str, prefix: str = "TL1") -> None:
    """No code is reported more often after the action than before (counted per code: a finding
    that was already there may move to a line the action rewrote)."""
    from collections import Counter

    old = Counter(code for code, _ in training_findings(before, prefix))
    found = training_findings(after, prefix)
    new = [(code, line) for code, line in found if Counter(c for c, _ in found)[code] > old[code]]
    assert not new, f"the action introduced findings: {new}\n{number_lines(after)}"


# -- running programs ----------------------------------------------------------------------------
@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    workdir: Path
    timed_out: bool = False
    _probes: list[tuple[str, object]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def probes(self, name: str) -> list[object]:
        """Values printed by `probe(name, value)` lines, in order (all ranks for torchrun)."""
        return [value for key, value in self._probes if key == name]

    def probe(self, name: str) -> object:
        """The single value of probe `name` (fails if it was printed zero or several times)."""
        values = self.probes(name)
        assert len(values) == 1, f"probe {name!r} printed {len(values)} times\n{self.describe()}"
        return values[0]

    def describe(self) -> str:
        return (f"exit code {self.returncode}{' (timed out)' if self.timed_out else ''}\n"
                f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}")

    def assert_ok(self) -> "RunResult":
        assert self.ok, self.describe()
        return self


def _parse_probes(stdout: str) -> list[tuple[str, object]]:
    found = []
    for line in stdout.splitlines():
        match = _PROBE_LINE.match(line.strip())
        if match:
            try:
                found.append((match.group(1), json.loads(match.group(2))))
            except json.JSONDecodeError:
                found.append((match.group(1), match.group(2)))
    return found


def with_probe(source: str, code: str) -> str:
    """`source` followed by probe code (dedented); the code may call `probe(name, value)`."""
    helper = (
        "\n\ndef probe(name, value):\n"
        "    import json as _json, os as _os, sys as _sys\n"
        "    _sys.stdout.flush()\n"
        f"    _label = _os.environ.get('PROBE_LABEL', '')  # set by run_batch: 'program.'\n"
        f"    _os.write(1, ({PROBE_PREFIX!r} + _label + name + ' ' + _json.dumps(value, default=float) + '\\n').encode())\n\n\n"
    )
    return source.rstrip("\n") + helper + textwrap.dedent(code).strip("\n") + "\n"


# What `instrumented` records while the program trains, printed as one `PROBE run {...}` line per
# process at exit. Global hooks see every optimizer and module, wherever the program creates
# them (module level, main(), a helper), so tests need not reach into the program's locals.
_INSTRUMENTATION = """
import atexit as _atexit, json as _json, os as _os
import torch as _torch
import torch.nn.modules.module as _module_hooks
import torch.optim.optimizer as _optimizer_hooks

_RUN = {"rank": int(_os.environ.get("RANK", 0)), "world_size": int(_os.environ.get("WORLD_SIZE", 1)), "steps": 0,
        "lrs": [], "grad_norms": [], "weight_decays": [], "linear_dtypes": [], "loaded_checksums": [],
        "optimizer_states_loaded": [], "checksum": None, "trainable": None}


def _checksum(parameters):
    return float(sum(p.detach().double().sum() for p in parameters))


def _before_step(optimizer, args, kwargs):
    group = optimizer.param_groups[0]
    _RUN["lrs"].append(float(group["lr"]))
    _RUN["weight_decays"].append(float(group.get("weight_decay", 0.0)))
    grads = [p.grad.detach().double().norm() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    _RUN["grad_norms"].append(float(_torch.stack(grads).norm()) if grads else 0.0)


def _after_step(optimizer, args, kwargs):
    _RUN["steps"] += 1
    params = [p for g in optimizer.param_groups for p in g["params"]]
    _RUN["checksum"] = _checksum(params)


def _after_forward(module, inputs, output):
    if isinstance(module, _torch.nn.Linear) and isinstance(output, _torch.Tensor):
        if str(output.dtype) not in _RUN["linear_dtypes"]:
            _RUN["linear_dtypes"].append(str(output.dtype))


_optimizer_hooks.register_optimizer_step_pre_hook(_before_step)
_optimizer_hooks.register_optimizer_step_post_hook(_after_step)
_module_hooks.register_module_forward_hook(_after_forward)

_module_load = _torch.nn.Module.load_state_dict
_optimizer_load = _torch.optim.Optimizer.load_state_dict


def _load_module(self, *args, **kwargs):
    result = _module_load(self, *args, **kwargs)
    _RUN["loaded_checksums"].append(_checksum(self.parameters()))
    return result


def _load_optimizer(self, *args, **kwargs):
    result = _optimizer_load(self, *args, **kwargs)
    _RUN["optimizer_states_loaded"].append(len(self.state))
    return result


_torch.nn.Module.load_state_dict = _load_module
_torch.optim.Optimizer.load_state_dict = _load_optimizer


_FRESH_RUN = _json.dumps(_RUN)


def _reset_run():
    _RUN.clear()
    _RUN.update(_json.loads(_FRESH_RUN))
    _RUN["rank"], _RUN["world_size"] = int(_os.environ.get("RANK", 0)), int(_os.environ.get("WORLD_SIZE", 1))


def _report():
    # One write() call: the lines of several torchrun processes sharing a pipe cannot interleave.
    import sys as _sys
    _sys.stdout.flush()
    _label = _os.environ.get("PROBE_LABEL", "")
    _os.write(1, ("PROBE " + _label + "run " + _json.dumps(_RUN) + "\\n").encode())


if not globals().get("_BATCH"):
    _atexit.register(_report)

"""


def instrumented(source: str) -> str:
    """`source` with hooks that record what training did; read them with `result.probe("run")`.

    Recorded: `steps` (optimizer steps), `lrs` / `weight_decays` (param group 0 before each
    step), `grad_norms` (total gradient norm before each step, after any clipping),
    `linear_dtypes` (output dtypes of nn.Linear layers, e.g. bfloat16 under autocast),
    `loaded_checksums` / `optimizer_states_loaded` (each load_state_dict), `checksum` (sum of the
    last stepped optimizer's parameters), `rank` / `world_size`.
    """
    lines = source.splitlines(keepends=True)
    # `from __future__` imports must stay first.
    cut = max((i + 1 for i, line in enumerate(lines) if line.startswith("from __future__")), default=0)
    return "".join(lines[:cut]) + _INSTRUMENTATION + "".join(lines[cut:])


def offline_weights(source: str, *builders: str) -> str:
    """`source` with torchvision.models.<builder> patched to build with weights=None.

    Tests never download: the patched builder prints `PROBE weights_requested "<enum>"` (what the
    program asked for) and builds the same architecture with random weights. Without the patch
    a download would fail anyway: runs get an empty TORCH_HOME and no network.
    """
    patch = ["import json as _json", "import torchvision.models as _models", ""]
    for builder in builders:
        patch += [
            f"def _offline_{builder}(*args, weights=None, _build=_models.{builder}, **kwargs):",
            f"    print('PROBE weights_requested ' + _json.dumps(str(weights)), flush=True)",
            f"    return _build(*args, weights=None, **kwargs)",
            f"_models.{builder} = _offline_{builder}",
            "",
        ]
    return "\n".join(patch) + "\n" + source


_BATCH_DRIVER = """
import os as _os_driver, traceback as _traceback
for _label, _path, _folder, _env in PROGRAMS:
    _saved_env = dict(_os_driver.environ)
    _os_driver.environ.update(_env)
    _os_driver.environ["PROBE_LABEL"] = _label + "."
    _os_driver.makedirs(_folder, exist_ok=True)
    _os_driver.chdir(_folder)
    _reset_run()
    try:
        with open(_path, encoding="utf-8") as _handle:
            exec(compile(_handle.read(), _path, "exec"), {"__name__": "__main__", "__file__": _path})
    except BaseException:  # a failing program (SystemExit included) must not hide the others
        _os_driver.write(1, ("PROBE " + _label + ".error " + _json.dumps(_traceback.format_exc()) + "\\n").encode())
    _report()
    _os_driver.environ.clear()
    _os_driver.environ.update(_saved_env)
"""


@dataclass
class Program:
    """One program of a `run_batch`: its probes come back as `<label>.<name>` (`<label>.run` is
    its instrumentation record, `<label>.error` a traceback if it failed)."""

    label: str
    source: str
    env: dict[str, str] = field(default_factory=dict)
    folder: str | None = None  # working folder under the batch's workdir (default: the label)


def run_batch(programs: list[Program], workdir: Path | None = None, *, timeout: float = 240) -> RunResult:
    """Run several (uninstrumented) programs one after the other in ONE instrumented interpreter.

    torch is imported once: on a shared 2-core machine the import costs more than the few
    training steps each program takes. Each program runs in its own folder (programs that share
    a folder, in order, see each other's files: a second run resumes from the first one's
    checkpoint), with its own environment overrides, and `instrumented`'s record starts afresh.
    Programs in one batch share the interpreter's state (random generators, global torch flags):
    put a program that changes global flags (deterministic algorithms) last, or alone.
    """
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="torch-lsp-scaffold-"))
    workdir.mkdir(parents=True, exist_ok=True)
    entries = []
    for program in programs:
        path = workdir / f"{program.label}.py"
        path.write_text(program.source, encoding="utf-8")
        entries.append((program.label, str(path), str(workdir / (program.folder or program.label)), program.env))
    driver = "_BATCH = True\n" + _INSTRUMENTATION + f"\nPROGRAMS = {entries!r}\n" + _BATCH_DRIVER
    return run_program(driver, workdir, timeout=timeout, name="batch_driver.py")


def _environment(extra: dict[str, str] | None, workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SMALL_RUN_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["TORCH_HOME"] = str(workdir / "torch_home")  # an empty cache: a download would fail loudly
    env["TORCH_LSP_NO_DOWNLOAD"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # the machine is shared; tiny models gain nothing from threads
    env["PYTHONHASHSEED"] = "0"
    env.pop("WORLD_SIZE", None), env.pop("RANK", None), env.pop("LOCAL_RANK", None)
    env.update(extra or {})
    return env


def _run(command: list[str], workdir: Path, env: dict[str, str] | None, timeout: float) -> RunResult:
    try:
        done = subprocess.run(command, cwd=workdir, env=_environment(env, workdir), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        err = expired.stderr.decode() if isinstance(expired.stderr, bytes) else (expired.stderr or "")
        return RunResult(-9, out, err, workdir, True, _parse_probes(out))
    return RunResult(done.returncode, done.stdout, done.stderr, workdir, False, _parse_probes(done.stdout))


def _write_program(source: str, workdir: Path | None, name: str) -> tuple[Path, Path]:
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="torch-lsp-scaffold-"))
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / name
    script.write_text(source, encoding="utf-8")
    return workdir, script


def run_program(source: str, workdir: Path | None = None, *, env: dict[str, str] | None = None,
                args: list[str] | None = None, timeout: float = 60, name: str = "train.py") -> RunResult:
    """Run `source` as a script in `workdir` (a fresh temp dir by default) with small sizes.

    Run it again in the same `workdir` to resume from files the first run wrote.
    """
    workdir, script = _write_program(source, workdir, name)
    return _run([sys.executable, str(script), *(args or [])], workdir, env, timeout)


def run_torchrun(source: str, workdir: Path | None = None, *, nproc: int = 2, env: dict[str, str] | None = None,
                 args: list[str] | None = None, timeout: float = 120, name: str = "train.py") -> RunResult:
    """Run `source` under `python -m torch.distributed.run --nproc_per_node <nproc>` (CPU, gloo)."""
    workdir, script = _write_program(source, workdir, name)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(script), *(args or [])]
    return _run(command, workdir, env, timeout)


def number_lines(source: str) -> str:
    return "\n".join(f"{i + 1:4} {line}" for i, line in enumerate(source.splitlines()))
