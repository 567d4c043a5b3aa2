"""Run a training script unchanged, under the probe: ``python launch.py SCRIPT [ARGS...]``.

The runner starts this file by path (also as torchrun's entry point), so it works with any
interpreter that has torch, even one where torch_lsp is not installed. It behaves like
``python SCRIPT ARGS``: same ``sys.argv``, ``sys.path[0]`` is the script's folder, the script
runs as ``__main__``, and its exit status and traceback are its own.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(module_name: str, filename: str):
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(HERE, filename))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _exit_on_sigterm(signum, frame):
    # Unwind normally (finally blocks, atexit: the probe writes its last record); the runner
    # escalates to SIGKILL if the script does not stop in time.
    raise SystemExit(128 + signum)


def main() -> None:
    if len(sys.argv) < 2:
        sys.stderr.write("usage: launch.py SCRIPT [ARGS...]\n")
        raise SystemExit(2)
    script = os.path.abspath(sys.argv[1])
    sys.argv = [script, *sys.argv[2:]]
    # Python puts the script's folder first on sys.path; ours must not be visible to the script.
    if sys.path and os.path.abspath(sys.path[0] or ".") == HERE:
        sys.path[0] = os.path.dirname(script)
    else:
        sys.path.insert(0, os.path.dirname(script))
    _load("_torch_lsp_epochs", "epochs.py")
    probe = _load("_torch_lsp_probe", "probe.py")
    run_dir = os.environ.get(probe.ENV_RUN_DIR)
    if run_dir:
        probe.install(run_dir, script)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        raise
    except BaseException as exc:
        probe.record_exception(exc, {script})
        raise


if __name__ == "__main__":
    main()
