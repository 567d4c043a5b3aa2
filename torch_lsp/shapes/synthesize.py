"""Synthesized calls: run the forward of module classes that nothing in the workspace calls.

Worker side (torch + stdlib). For each probe (a class of a recorded file), `probe_class`
builds an instance (construct.py), finds an example input and the sizes it accepts
(example_inputs.py), and `run_probes` calls it once at those sizes under the job's recorders,
so its forward's lines get shapes like any driver's call would give them; then once more per
free size, recorded apart, so that dims.py can name the dimensions that follow each size.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from torch_lsp.shapes.context import now
from torch_lsp.shapes.construct import CannotConstruct, Hints, constructions
from torch_lsp.shapes.example_inputs import Example, Failure, plan_inputs, search
from torch_lsp.shapes.first_use import Template
from torch_lsp.shapes.spec import Probe

MAX_CONSTRUCTIONS = 3  # different instances tried when the first one cannot be called


def stated_inputs(probe: Probe) -> dict[str, tuple[list, str, str]]:
    """parameter -> (dims as written, dtype name, origin), from the probe's hints: pragmas,
    jaxtyping annotations and pyproject.toml, already in that order of precedence."""
    inputs = probe.hints.get("inputs") or {}
    return {str(k): (list(v[0]), str(v[1]), str(v[2])) for k, v in inputs.items()
            if isinstance(v, (list, tuple)) and len(v) == 3}


@dataclass
class Outcome:
    """What a probe found: how the instance was built and its example, or why nothing ran."""

    probe: Probe
    instance: nn.Module | None = None
    built_as: str = ""
    example: Example | None = None
    reason: str = ""  # why there are no shapes, in one sentence
    out_of_time: bool = False  # the search ended at its deadline, not because nothing works

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"class": self.probe.class_name, "line": self.probe.line}
        if self.example is not None:
            data.update(built_as=self.built_as, inputs=self.example.describe(), free=self.example.free,
                        pinned=self.example.pinned, sizes=self.example.sizes, forward_line=_forward_line(self.instance))
        else:
            data["reason"] = self.reason
        return data


def _forward_line(instance: nn.Module) -> int | None:
    code = getattr(getattr(type(instance), "forward", None), "__code__", None)
    return code.co_firstlineno - 1 if code is not None else None


def find_class(namespace: dict, probe: Probe) -> type | None:
    """The module class named by the probe, as the executed file defined it."""
    value = namespace.get(probe.class_name)
    if isinstance(value, type) and issubclass(value, nn.Module):
        return value
    return None


def stated_templates(probe: Probe, instance: nn.Module | None = None) -> dict[str, tuple[Template, str]]:
    """Inputs the user wrote down, as templates; Lightning's `example_input_array` comes after
    pragmas and annotations and before pyproject.toml (the server sends them in that order)."""
    out: dict[str, tuple[Template, str]] = {}
    for name, (dims, dtype, origin) in stated_inputs(probe).items():
        if origin == "pyproject.toml" and instance is not None and _example_input_array(instance) is not None:
            continue
        out[name] = (Template(list(dims), getattr(torch, dtype, torch.float32), source=origin), origin)
    array = _example_input_array(instance) if instance is not None else None
    if array is not None:
        names = _forward_parameter_names(instance)
        values = array if isinstance(array, (tuple, list)) else (array,)
        for name, value in zip(names, values):
            if name not in out and isinstance(value, torch.Tensor):
                dims: list[int | str] = list(value.shape)
                out[name] = (Template(dims, value.dtype, source="example_input_array"), "example_input_array")
    return out


def _example_input_array(instance: nn.Module):
    try:
        return getattr(instance, "example_input_array", None)
    except Exception:  # noqa: BLE001 - Lightning raises when it is not set
        return None


def _forward_parameter_names(instance: nn.Module) -> list[str]:
    import inspect

    try:
        return [n for n, p in inspect.signature(instance.forward).parameters.items()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    except (TypeError, ValueError):
        return []


def probe_class(cls: type, namespace: dict, probe: Probe, hints: Hints, deadline: float,
                quiet: Callable[[], Any] = nullcontext, free_until: float | None = None) -> Outcome:
    """Build `cls` and find inputs its forward accepts (nothing is recorded here)."""
    outcome = Outcome(probe)
    hints.deadline = deadline
    last: Failure | None = None
    try:
        with quiet():
            for count, built in enumerate(constructions(cls, namespace, hints)):
                params = plan_inputs(built.instance, stated_templates(probe, built.instance))
                found = search(built.instance, params, deadline, quiet, free_until)
                if isinstance(found, Example):
                    outcome.instance, outcome.built_as, outcome.example = built.instance, built.call_text, found
                    return outcome
                last = found
                if count + 1 >= MAX_CONSTRUCTIONS or now() > deadline:
                    break
    except CannotConstruct as error:
        outcome.reason = f"{cls.__name__} could not be built from what the code gives: {error}"
        outcome.out_of_time = now() >= deadline
        return outcome
    except Exception as error:  # noqa: BLE001 - a constructor that fails in a way we do not expect
        outcome.reason = f"{cls.__name__} could not be built: {type(error).__name__}: {_first_line(error)}"
        return outcome
    outcome.out_of_time = now() >= deadline
    if last is not None:
        where = f" in {last.layer}" if last.layer else ""
        outcome.reason = (f"no input found for {cls.__name__}.forward: the last try failed{where} with "
                          f"{type(last.error).__name__}: {_first_line(last.error)}")
    else:
        outcome.reason = f"{cls.__name__} could not be built in time"
    return outcome


def call(outcome: Outcome, sizes: dict[str, int] | None = None) -> Any:
    """Call the probed instance at `sizes` (default: the example's), as a driver would."""
    example = outcome.example
    args, kwargs = example.arguments(sizes)
    return outcome.instance(*args, **kwargs)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


# -- inside a job ---------------------------------------------------------------------------------

SAFETY_MARGIN_S = 0.3  # left for the reports when the probes have used the job's time
MIN_PROBE_SHARE_S = 1.0  # a probe's search gets twice its even share of the time left, at least this


# What became of each probe, in `extras["probed"]` ({class: status}): the session schedules
# the classes left "late" (or "started": the job stopped during its probe) in another job.
SYNTHESIZED, COVERED, FAILED, UNDEFINED, LATE, STARTED = "synthesized", "covered", "failed", "undefined", "late", "started"


def run_probes(probes: list[Probe], context) -> None:
    """Construct and call each probed class that the driver did not reach, recorded like a
    driver's call; facts land in the file's report (`extras["synthesized"]`, and each probe's
    status in `extras["probed"]`), reasons for classes left without shapes in its notes.
    Largest classes first: calling a model runs its submodules' forwards too, and those need no
    probe of their own."""
    recorder = context.recorder
    spec = context.spec
    deadline = context.started + spec.timeout - SAFETY_MARGIN_S
    namespaces: dict[str, dict | None] = {}
    facts = context.facts.setdefault("synthesized", {})
    ordered = sorted(probes, key=lambda p: -int(p.hints.get("size", 0)))
    for index, probe in enumerate(ordered):
        status = context.facts.setdefault("probed", {}).setdefault(probe.path, {})
        if now() >= deadline:
            for late in ordered[index:]:
                status[late.class_name] = LATE
            return
        status[probe.class_name] = STARTED
        if probe.path not in namespaces:
            namespaces[probe.path] = _namespace(probe.path, context)
        namespace = namespaces[probe.path]
        cls = find_class(namespace, probe) if namespace is not None else None
        if cls is None:
            status[probe.class_name] = UNDEFINED
            context.note(f"{probe.class_name}: not defined when the file ran (it stopped before the class)",
                         probe.path, probe.line)
            continue
        if _covered(recorder, probe, cls):
            status[probe.class_name] = COVERED
            continue
        left = deadline - now()
        share = max(min(left, MIN_PROBE_SHARE_S), left / max(1, len(ordered) - index) * 2)
        with recorder.paused():
            outcome = probe_class(cls, namespace, probe, _hints(probe), now() + share, free_until=deadline)
        if outcome.example is None:
            # Out of time is not a failure: another job with more time may find the input.
            status[probe.class_name] = LATE if outcome.out_of_time else FAILED
            if not outcome.out_of_time:
                context.note(outcome.reason, probe.path, probe.line)
            continue
        try:
            _record_calls(recorder, outcome)
        except Exception as error:  # noqa: BLE001 - it ran quietly with the same sizes; say so and go on
            status[probe.class_name] = FAILED
            context.note(f"{probe.class_name}: the synthesized call failed when recorded: "
                         f"{type(error).__name__}: {_first_line(error)}", probe.path, probe.line)
            continue
        status[probe.class_name] = SYNTHESIZED
        facts.setdefault(probe.path, []).append(outcome.to_dict())


def _namespace(path: str, context) -> dict | None:
    """The module object of the probed file: the driver's `__main__`, else the file imported
    with its package context (its module-level code runs, unrecorded)."""
    from torch_lsp.shapes import imports

    recorder, sources = context.recorder, context.sources
    try:
        plan = sources.plan(path) if path not in recorder.plans else recorder.plans[path]
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    if plan is None:
        return None
    try:
        with recorder.paused():
            own = context.spec.module if path == context.spec.main.filename else None  # the document's package name
            module = imports.load_file(path, sources, list(context.spec.roots), own)
    except Exception as error:  # noqa: BLE001 - its imports may fail: the note says which
        context.note(f"the file could not be imported to synthesize calls: {type(error).__name__}: "
                     f"{_first_line(error)}", path, None)
        return None
    recorder.add_file(plan)
    return vars(module)


def _covered(recorder, probe: Probe, cls: type | None = None) -> bool:
    """Did a driver (or a bigger probe) already run this class's forward?"""
    forward = getattr(cls, "forward", None) if cls is not None else None
    code = getattr(forward, "__code__", None)
    if code is None or code.co_filename != probe.path:
        return False
    first = code.co_firstlineno - 1
    last = max((line for _, _, line in code.co_lines() if line is not None), default=first + 1) - 1
    return any(f == probe.path and first < line <= last for f, line, _ in recorder.variables) or \
        any(key[0] == probe.path and first < key[1] <= last for key in recorder.expressions)


def _hints(probe: Probe) -> Hints:
    hints = probe.hints
    return Hints(sites={probe.class_name: list(hints.get("sites") or [])},
                 argparse_defaults=dict(hints.get("argparse") or {}))


def _record_calls(recorder, outcome: Outcome) -> None:
    """The example call recorded, plus one call per free size recorded apart; dimensions that
    follow a size get its name (dims.py) before the tables join the job's."""
    from torch_lsp.shapes.dims import with_dims

    example = outcome.example
    with torch.no_grad():
        with recorder.capture() as (variables, expressions):
            call(outcome)
        variants: dict[str, tuple[dict, dict]] = {}
        for symbol, size in example.free.items():
            try:
                with recorder.capture() as tables:
                    call(outcome, {**example.sizes, symbol: size})
            except Exception:  # noqa: BLE001 - it ran quietly before; without it, fewer names
                continue
            variants[symbol] = tables
    changed = {s: example.free[s] for s in variants}
    for key, (stmt, values) in variables.items():
        found = {s: t[0][key][1] for s, t in variants.items() if key in t[0]}
        if len(found) == len(variants):
            values[:] = with_dims(values, found, example.sizes, changed)
    for key, (rng, values, info) in expressions.items():
        found = {s: t[1][key][1] for s, t in variants.items() if key in t[1]}
        if len(found) == len(variants):
            values[:] = with_dims(values, found, example.sizes, changed)
    recorder.merge(variables, expressions)
