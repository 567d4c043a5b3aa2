"""Start the shape worker inside its sandbox: `python -m torch_lsp.shapes.sandbox.launch
SCRATCH -- COMMAND...` confines this process (sandbox.confine_worker) and then becomes COMMAND
(exec: same pid, the confinement and the parent-death signal carry over).

Run with torch-lsp's own interpreter, before the project's: whatever the project's interpreter
runs at start-up (its site-packages, `.pth` files, a `sitecustomize`) is confined already.
"""

from __future__ import annotations

import os
import sys

from torch_lsp.shapes import sandbox


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m torch_lsp.shapes.sandbox.launch SCRATCH -- COMMAND...\n")
        raise SystemExit(2)
    scratch, command = argv[0], argv[2:]
    outcome = sandbox.confine_worker(scratch)
    for problem in outcome.missing:
        sys.stderr.write(f"torch-lsp worker sandbox: {problem}\n")
    for name in ("TMPDIR", "TMP", "TEMP"):  # the jobs' folders are made here
        os.environ[name] = scratch
    try:
        os.execv(command[0], command)
    except OSError as error:
        sys.stderr.write(f"torch-lsp: cannot start {command[0]}: {error}\n")
        raise SystemExit(127) from error


if __name__ == "__main__":
    main(sys.argv[1:])
