import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

# Subprocesses (servers, CLI runs) must import this checkout, installed or not.
# A rule that raises fails the test that ran it (in this process and in the servers it starts).
os.environ["TORCH_LSP_STRICT_RULES"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Hypothesis keeps its example database and constants cache in ./.hypothesis: not in the checkout.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", tempfile.mkdtemp(prefix="torch-lsp-hypothesis-"))


# -- the checkout stays as it was ---------------------------------------------------------------
# Tests write into temporary folders (tmp_path, run stores in tmp dirs), never into the checkout
# (tests/README.md). The session fails when a file appeared in it that a test run may not leave:
# anything but bytecode caches and build outputs of the install step.
_ALLOWED_NEW = ("__pycache__", ".pytest_cache", ".egg-info", "editors/vscode/out", "editors/vscode/node_modules")
_NOT_WALKED = {".git", ".venv", "venv", "node_modules", "__pycache__"}


def _checkout_files() -> set[str]:
    found = set()
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [s for s in subfolders if s not in _NOT_WALKED]
        relative = os.path.relpath(folder, ROOT)
        found.update(os.path.normpath(os.path.join(relative, f)) for f in files)
    return found


def pytest_sessionstart(session):
    session.config._checkout_before = _checkout_files()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_checkout_before", None)
    if before is None or getattr(session.config, "workerinput", None) is not None:
        return  # not recorded, or an xdist worker (the controller checks)
    new = sorted(p for p in _checkout_files() - before if not any(part in p for part in _ALLOWED_NEW))
    if new:
        listed = "\n  ".join(new[:20]) + ("\n  ..." if len(new) > 20 else "")
        session.config.get_terminal_writer().line(
            f"\nThe tests wrote into the checkout (use tmp_path; see tests/README.md):\n  {listed}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
