"""The model summary on the command line (`torch-lsp summary`, through the worker): each module
call with its shapes and parameter count, checked against the same model run for real on CPU;
`--depth`; the JSON form. (Totals against torchinfo: test_cost_summary.py.)"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES, ROOT

pytestmark = pytest.mark.slow  # runs the model for real on CPU

LENET = FIXTURES / "shapes" / "lenet_ok.py"


def _summary(*options: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "torch_lsp", "summary", "--format", "json", *options, str(LENET)],
                            capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_summary_matches_a_real_cpu_run():
    summary = _summary()
    model = summary["rows"][0]
    rows = {row["name"]: row for row in summary["rows"] if not row["repeat"]}

    namespace = runpy.run_path(str(LENET))  # the same program, on CPU
    net, images = namespace["net"], namespace["images"]
    total = sum(p.numel() for p in net.parameters())
    assert (model["class"], model["depth"], model["line"]) == ("Net", 0, 30)
    assert model["output"] == str(list(net(images).shape)) and model["input"] == [str(list(images.shape))]
    assert summary["totals"]["params"] == total == 62_006
    for name in ("conv1", "fc1", "fc3"):
        layer = getattr(net, name)
        assert rows[name]["params"] == sum(p.numel() for p in layer.parameters())
        assert rows[name]["depth"] == 1 and rows[name]["trainable"] == "True"
    assert rows["conv1"]["output"] == str(list(net.conv1(images).shape))
    assert rows["conv1"]["mult_adds"] == 6 * 3 * 5 * 5 * 8 * 28 * 28  # weights x output positions
    assert sum(row["params"] or 0 for row in summary["rows"]) == total
    assert "| └─ conv1: Conv2d(3, 6, kernel_size=(5, 5), stride=(1, 1)) | [8, 3, 32, 32] | [8, 6, 28, 28] | 456 |" \
        in summary["markdown"]
    assert "Total params: 62,006" in summary["markdown"]


def test_depth_zero_shows_the_model_alone():
    summary = _summary("--depth", "0")
    assert [row["name"] for row in summary["rows"]] == [""]
    assert summary["rows"][0]["params"] == 62_006 and summary["rows"][0]["mult_adds"] == summary["totals"]["mult_adds"]


def test_class_lens_title_names_free_dimensions(tmp_path):
    """A class nothing calls is called with synthesized inputs; the code lens above it shows the
    parameters and the shapes with the names of the sizes that are free (`B`)."""
    from torch_lsp.shapes.cost_view import class_lens_title
    from torch_lsp.shapes.report import ShapeReport

    model_only = tmp_path / "model_only.py"
    model_only.write_text(LENET.read_text().split("\n\nnet = Net()")[0] + "\n")
    result = subprocess.run([sys.executable, "-m", "torch_lsp", "shapes", "--format", "json", str(model_only)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    report = ShapeReport.from_dict(_zero_based(json.loads(result.stdout)))  # the CLI's JSON is 1-based
    [net] = [row for row in report.extras["modules"]["rows"] if row["class"] == "Net" and not row["repeat"]][:1]
    lines = model_only.read_text().splitlines()
    forward_line = next(i for i, text in enumerate(lines) if "def forward" in text)
    returned = next((i, text.index("x"), "x") for i, text in enumerate(lines) if "return x" in text)
    assert class_lens_title(net, report, forward_line, returned) == "62,006 params · [B, 3, 32, 32] → [B, 10]"
    assert class_lens_title(net) == f"62,006 params · [{net['inputs'][0]['shape'][0]}, 3, 32, 32] → " \
                                    f"[{net['inputs'][0]['shape'][0]}, 10]"


def _zero_based(value):
    from torch_lsp.cli_json import _POSITION_KEYS

    if isinstance(value, dict):
        return {key: item - 1 if key in _POSITION_KEYS and isinstance(item, int) and not isinstance(item, bool)
                else _zero_based(item) for key, item in value.items()}
    return [_zero_based(item) for item in value] if isinstance(value, list) else value
