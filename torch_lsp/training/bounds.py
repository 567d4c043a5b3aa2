"""What a training run may ask of this machine, and which scripts the editor may start.

`torch-lsp.train` takes its arguments from the client; a bad or hostile value must become a
clear error, not `torchrun --nproc_per_node=1000000000` or `python /etc/passwd`.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable

MAX_NODES = 1024  # torchrun's rendezvous handles far fewer in practice; a bound, not a target


def processes_this_machine_can_run() -> int:
    """One process per CPU core, or per GPU where there are more GPUs than cores."""
    gpus = len(glob.glob("/dev/nvidia[0-9]*"))
    return max(os.cpu_count() or 1, gpus)


def check_scale(nproc: int, nnodes: int, rdzv_endpoint: str | None) -> None:
    """Raise ValueError when the run asks for more than this machine (or a rendezvous) can host."""
    most = processes_this_machine_can_run()
    if nproc > most:
        raise ValueError(f"`nproc` = {nproc} is more processes than this machine can run per node "
                         f"({most}: its CPU cores or GPUs)")
    if nnodes > MAX_NODES:
        raise ValueError(f"`nnodes` = {nnodes} is more than {MAX_NODES} nodes")
    if nnodes > 1 and not rdzv_endpoint:
        raise ValueError(f"`nnodes` = {nnodes} needs `rdzvEndpoint` (host:port of the rendezvous): "
                         "without it the run could only wait for nodes that never come")


def check_script(path: str, workspace_folders: Iterable[Path], open_files: Iterable[str]) -> str:
    """The script's real path if the editor may start it: a `.py` file inside a workspace folder
    (or open in the editor, when there is no folder). Raises ValueError otherwise."""
    real = os.path.realpath(path)  # a symlink inside the workspace must not lead outside it
    if not real.endswith(".py"):
        raise ValueError(f"training script must be a Python file (.py): {path}")
    folders = [Path(os.path.realpath(folder)) for folder in workspace_folders]
    if any(Path(real).is_relative_to(folder) for folder in folders):
        return os.path.abspath(path)
    if {os.path.realpath(f) for f in open_files} & {real}:
        return os.path.abspath(path)
    where = ", ".join(str(f) for f in folders) or "no workspace folder is open"
    raise ValueError(f"training script must be inside the workspace ({where}) or open in the editor: {path}")
