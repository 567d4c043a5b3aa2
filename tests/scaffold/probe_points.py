"""Put probe lines *inside* a program (the harness's `with_probe` appends at the end)."""

from __future__ import annotations


def insert_line(source: str, needle: str, code: str, *, before: bool = False, occurrence: int = 0,
                deeper: bool = False) -> str:
    """`code` on its own line after (or before) the line holding `needle`, at that line's
    indentation (one level deeper with `deeper`, e.g. for the first line of a loop body)."""
    lines = source.splitlines(keepends=True)
    matches = [i for i, line in enumerate(lines) if needle in line]
    if len(matches) <= occurrence:
        raise ValueError(f"{needle!r} occurs on fewer than {occurrence + 1} lines")
    index = matches[occurrence]
    line = lines[index]
    indent = line[: len(line) - len(line.lstrip())] + ("    " if deeper else "")
    lines.insert(index if before else index + 1, f"{indent}{code}\n")
    return "".join(lines)


def with_probe_function(source: str) -> str:
    """`source` with `probe(name, value)` defined first, so probes inside loops can call it
    (the lines it prints are the ones `harness.RunResult.probes` reads)."""
    helper = ("def probe(name, value):\n"
              "    import json as _json\n"
              "    print('PROBE ' + name + ' ' + _json.dumps(value, default=float), flush=True)\n\n\n")
    return helper + source


_DRIVER = '''
import json, sys, traceback

def _probe_for(label):
    def probe(name, value):
        print("PROBE " + label + "." + name + " " + json.dumps(value, default=float), flush=True)
    return probe

for label, path in PROGRAMS:
    probe = _probe_for(label)
    scope = {"__name__": "__main__", "__file__": path, "probe": probe}
    try:
        with open(path, encoding="utf-8") as handle:
            exec(compile(handle.read(), path, "exec"), scope)
    except BaseException:  # a failing program (SystemExit included) must not hide the others
        probe("__error__", traceback.format_exc())
    probe("__done__", True)
'''


def run_programs(programs: dict[str, str], workdir, **run_options):
    """Run several programs one after the other in ONE interpreter (torch imported once: on a
    shared 2-core machine the import costs more than the training steps).

    Each program can call `probe(name, value)` without defining it; its probes come back as
    `<label>.<name>`, and `<label>.__error__` holds the traceback of a program that failed.
    """
    from pathlib import Path

    from harness import run_program

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for label, source in programs.items():
        path = workdir / f"{label.replace('.', '_')}.py"
        path.write_text(source, encoding="utf-8")
        paths.append((label, str(path)))
    driver = f"PROGRAMS = {paths!r}\n" + _DRIVER
    run = run_program(driver, workdir, name="driver.py", **run_options).assert_ok()
    for label, _ in paths:
        errors = run.probes(f"{label}.__error__")
        assert not errors, f"{label} failed:\n{errors[0]}\n{programs[label]}"
        assert run.probes(f"{label}.__done__") == [True], run.describe()
    return run
