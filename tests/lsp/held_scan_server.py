"""`torch-lsp serve` whose first workspace scan is held until a file named `.scan-may-end`
appears in the workspace root: the first scan of a large project, for as long as a test needs,
to check what does and does not wait for it (tests/lsp/test_cross_file_lsp.py).

`--search-misses`: the text search for the files that may import a document's classes
(analysis/nearby.py) finds none, as for a class reached through a name built at run time: the
driver chosen before the scan ends is then not the whole index's."""

import os
import sys
import time

from torch_lsp.analysis.workspace import WorkspaceIndex
from torch_lsp.cli import main

GATE = ".scan-may-end"
_scan = WorkspaceIndex.scan


def _held_scan(index: WorkspaceIndex, *args, **kwargs):
    while not os.path.exists(os.path.join(index.root, GATE)):
        time.sleep(0.05)  # the server's scan thread, as a scan of thousands of files holds it
    return _scan(index, *args, **kwargs)


if __name__ == "__main__":
    WorkspaceIndex.scan = _held_scan
    if "--search-misses" in sys.argv:
        from torch_lsp.shapes import session

        session.possible_runners = lambda document, texts: {document}
    sys.argv = ["torch-lsp", "serve"]
    raise SystemExit(main())
