"""The workspace's first scan, in a process of its own when the workspace is large.

Indexing 1,500 files takes ~9 s of CPU, and in a thread of the server it held the interpreter
lock for most of it: every static analysis, code action and hover of those seconds ran at half
speed or less (bench/bench_first_scan.py). A child Python process (this module, run with `-m`)
scans instead and sends the files' facts back pickled (~5 KB a file); the server only unpickles
them (~6 % of the scan's CPU). The child imports the analysis modules only, never torch, and
runs no code of the workspace. Small workspaces are scanned in the thread as before: a child's
start costs more than their scan. Any failure of the child falls back to the thread.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import subprocess
import sys
import threading

from torch_lsp.analysis.workspace import ScanLimits, ScanResult, WorkspaceIndex, python_files
from torch_lsp.own_python import module_command

log = logging.getLogger(__name__)
IN_PROCESS_BELOW = 200  # files
CHILD_TIMEOUT_S = 600.0  # a child that hangs is given up on, and the thread scans


def scan(index: WorkspaceIndex, in_process_below: int = IN_PROCESS_BELOW) -> ScanResult:
    """`index.scan()`, its work done in a child process when the root holds `in_process_below`
    Python files or more."""
    if sum(1 for _ in itertools.islice(python_files(index.root), in_process_below)) < in_process_below:
        return index.scan()
    try:
        files, result = _scan_in_child(index.root, index.limits)
    except (OSError, subprocess.SubprocessError, pickle.UnpicklingError, EOFError, ValueError, TypeError,
            AttributeError, ImportError) as error:
        log.warning("scanning the workspace in a child process failed (%s); scanning here", error)
        return index.scan()
    index.adopt(files)
    return result


def _scan_in_child(root: str, limits: ScanLimits):
    """The child's facts, read from its output as they come (never the whole pickle at once)."""
    with subprocess.Popen(module_command(__name__, root, str(limits.max_files), str(limits.max_file_bytes)),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        timer = threading.Timer(CHILD_TIMEOUT_S, child.kill)
        timer.start()
        try:
            sent = pickle.load(child.stdout)
        except (pickle.UnpicklingError, EOFError):
            child.wait()
            raise subprocess.SubprocessError(
                f"exit status {child.returncode}: {child.stderr.read().decode(errors='replace')[-500:]}") from None
        finally:
            timer.cancel()
    files, result = sent
    if not isinstance(files, dict) or not isinstance(result, ScanResult):
        raise ValueError("the child sent something else than a scan")
    return files, result


def _main(argv: list[str]) -> int:
    root, max_files, max_file_bytes = argv
    index = WorkspaceIndex(root, ScanLimits(int(max_files), int(max_file_bytes)))
    result = index.scan()
    sys.stdout.buffer.write(pickle.dumps((index.files, result), protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
