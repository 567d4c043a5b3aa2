"""The model summary of issue 12's case, through `torch-lsp summary`: a user's block class used
three times, an empty `Sequential()` shortcut, a model imported from another file of the
workspace, a layer whose `extra_repr()` spans lines; checked against the same model on CPU."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow  # the shape worker, and the model run for real on CPU


# fixtures/resnet_block.py's blocks with issue 12's shortcut: an empty `Sequential()` where the
# block keeps its shape (the summary showed the first instance's count for every instance).
BLOCKS = (FIXTURES / "resnet_block.py").read_text().split("\ntorch.manual_seed(0)")[0] \
    .replace("self.shortcut = nn.Identity()", "self.shortcut = nn.Sequential()")

TRAIN = '''
import torch
import torch.nn as nn

from blocks import TinyResNet


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def extra_repr(self):
        return "mode=a|b\\nlearned=True"  # two lines and a `|`: still one table cell

    def forward(self, x):
        return x * self.weight


model = nn.Sequential(TinyResNet(), Scale())
logits = model(torch.randn(4, 3, 32, 32))
'''


def test_user_blocks_imported_from_the_workspace_one_row_per_instance(tmp_path):
    """Issue 12's case: a block class used three times, with an empty `Sequential()` shortcut in
    one instance and a convolution shortcut in two, in a model imported from another file."""
    import torch

    from tests.shapes.helpers import cpu_run

    (tmp_path / "blocks.py").write_text(BLOCKS)
    (tmp_path / "train.py").write_text(TRAIN)
    result = subprocess.run([sys.executable, "-m", "torch_lsp", "summary", "--format", "json", "train.py"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    rows = summary["rows"]

    program = cpu_run(BLOCKS + TRAIN.split("from blocks import TinyResNet")[1])  # the same, on CPU
    model, outputs = program["model"], {}

    def record(name):
        def hook(module, args, out):
            outputs.setdefault(name, list(out.shape))
        return hook

    for name, module in model.named_modules():
        module.register_forward_hook(record(name))
    model(torch.randn(4, 3, 32, 32))

    assert [row["name"] for row in rows if row["depth"] == 2] == ["0.stem", "0.stage1", "0.stage2", "0.stage3",
                                                                   "0.pool", "0.fc"]
    assert (rows[0]["class"], rows[0]["line"]) == ("Sequential", 21)  # the call in train.py
    for row in rows:
        module = model.get_submodule(row["name"])
        held = module.parameters(recurse=not row["expanded"])
        assert (row["params"] or 0) == sum(p.numel() for p in held), row["name"]
        assert row["output"] == str(outputs[row["name"]]), row["name"]
    shortcuts = {row["name"]: row["params"] for row in rows if row["name"].endswith("shortcut")}
    assert shortcuts == {"0.stage1.shortcut": 0, "0.stage2.shortcut": 32 * 64 + 2 * 64,
                         "0.stage3.shortcut": 64 * 128 + 2 * 128}
    assert summary["totals"]["params"] == sum(p.numel() for p in model.parameters())

    table = [line for line in summary["markdown"].splitlines() if line.startswith("|")]
    assert len(table) == len(rows) + 2  # header, rule, one line per row: no cell broken over lines
    for line in table:
        assert len(re.findall(r"(?<!\\)\|", line)) == 7, line  # 6 cells
    assert "| └─ 1: Scale(mode=a\\|b learned=True) | [4, 10] | [4, 10] | 1 |" in summary["markdown"]
