"""Commands that run a module of torch-lsp in a child of the server's own interpreter.

`python -m module` puts the working directory first on `sys.path`, and an editor starts the
server in the workspace: a `logging.py` or `json.py` of the user's would be imported in place
of the standard library's, running the user's code in a helper that only reads the workspace
(the API-docs helper, the first scan, the sandbox check). `-P` (Python 3.11+) leaves the
working directory out; 3.10 has no such flag, so there the child drops it before importing.
"""

from __future__ import annotations

import sys


def module_command(module: str, *args: str) -> list[str]:
    """The command line that runs `python -m module args...` without the working directory
    on `sys.path`."""
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", module, *args]
    bootstrap = f"import sys, runpy; del sys.path[0]; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    return [sys.executable, "-c", bootstrap, *args]
