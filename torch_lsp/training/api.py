"""``torch_lsp.log(**metrics)``: explicit metrics from a training script.

Under ``torch-lsp train`` (or the editor's Train command) the launcher has loaded the probe
as ``_torch_lsp_probe`` and the values land in the run's metrics.jsonl with the current step.
Anywhere else the call does nothing, so scripts that use it still run unchanged with plain
``python``. Values may be numbers or one-element tensors.
"""

from __future__ import annotations

import sys


def log(**metrics) -> None:
    probe = sys.modules.get("_torch_lsp_probe")
    if probe is not None:
        probe.log(**metrics)
