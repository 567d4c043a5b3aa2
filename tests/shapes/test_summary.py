"""The model summary (CLI `torch-lsp summary`, LSP `torch-lsp.summary`): each layer call with its
output shape and parameter count, checked against the same model run for real on CPU."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys

from tests.conftest import FIXTURES, ROOT

LENET = FIXTURES / "shapes" / "lenet_ok.py"


def test_summary_matches_a_real_cpu_run():
    result = subprocess.run([sys.executable, "-m", "torch_lsp", "summary", "--format", "json", str(LENET)],
                            capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    rows = {row["call"]: row for row in summary["rows"]}

    namespace = runpy.run_path(str(LENET))  # the same program, on CPU
    net, images = namespace["net"], namespace["images"]
    assert rows["net(images)"]["parameters"] == sum(p.numel() for p in net.parameters())
    assert rows["net(images)"]["output"] == "Tensor[" + ", ".join(map(str, net(images).shape)) + "] float32"
    for name in ("conv1", "fc1", "fc3"):
        layer = getattr(net, name)
        assert rows[f"self.{name}(x)"]["parameters"] == sum(p.numel() for p in layer.parameters())
    conv1_out = net.conv1(images)
    assert rows["self.conv1(x)"]["output"] == "Tensor[" + ", ".join(map(str, conv1_out.shape)) + "] float32"
    assert "| `net(images)` |" in summary["markdown"]
    assert f"{sum(p.numel() for p in net.parameters()):,}" in summary["markdown"]
