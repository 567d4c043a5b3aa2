"""`torch-lsp shapes | summary | check` on Jupyter notebooks: the code cells run as one program
and every shape and shape error is shown in its cell. Shapes are checked against CPU."""

from __future__ import annotations

import json
import re

import pytest

from tests.notebooks import (DATA, IMPORTS, MODEL, SETUP, TRAINING, TRAINING_WITH_MAGICS, as_python_file,
                             write_notebook)
from tests.shapes.helpers import cpu_run
from tests.shapes.test_cli_shapes import torch_lsp

pytestmark = pytest.mark.slow  # each command starts a shape worker (imports torch)

BROKEN = [("code", IMPORTS), ("markdown", "## The model"), ("code", MODEL.replace("nn.Linear(hidden, classes)", "nn.Linear(32, classes)")),
          ("code", DATA), ("code", SETUP)]


def test_shapes_prints_each_cell_with_its_shapes(tmp_path):
    path = write_notebook(tmp_path / "training.ipynb", TRAINING_WITH_MAGICS)
    result = torch_lsp("shapes", str(path))
    assert result.returncode == 0, result.stderr
    cells = re.split(r"^# %% cell (\d+)\n", result.stdout, flags=re.M)[1:]
    shown = {int(number): text for number, text in zip(cells[::2], cells[1::2])}
    assert sorted(shown) == [2, 3, 5, 6, 7]  # code cells, numbered as Jupyter shows them
    namespace = cpu_run(as_python_file(TRAINING)[0])  # the same code without IPython syntax, on CPU
    out = tuple(namespace["out"].shape)
    assert f"# out: Tensor[{', '.join(map(str, out))}] float32" in shown[6]
    assert shown[6].splitlines()[4] == "MLP?"  # the cell as written, help line included
    # The model's cell: called with [8, 20] and with the loader's batches (32, named: it is the batch).
    assert "# h: Tensor[8, 64] float32 | Tensor[B, 64] float32" in shown[3]

    data = json.loads(torch_lsp("shapes", "--format", "json", str(path)).stdout)
    layout = {cell["cell"]: cell for cell in data["notebook"]["cells"]}
    [out_variable] = [v for v in data["variables"] if v["name"] == "out"]
    assert layout[6]["firstLine"] <= out_variable["line"] < layout[6]["firstLine"] + layout[6]["lineCount"]
    assert tuple(out_variable["values"][-1]["shape"]) == out
    [h] = [v for v in data["variables"] if v["name"] == "h"]
    assert [value["shape"] for value in h["values"]] == [[8, 64], [32, 64]]  # batch_size=32 in the loader


def test_check_and_summary_put_shape_errors_and_layers_in_their_cells(tmp_path):
    path = write_notebook(tmp_path / "broken.ipynb", BROKEN)
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        cpu_run(as_python_file(BROKEN)[0])
    result = torch_lsp("check", str(path))
    assert result.returncode == 1, result.stderr
    assert f"{path}:cell 3:9:16: TL201 fc2 (nn.Linear) expects 32 input features but got 64" in result.stdout
    found = json.loads(torch_lsp("check", "--format", "json", str(path)).stdout)
    assert [(f["cell"], f["line"], f["code"]) for f in found] == [(3, 9, "TL201")]
    summary = torch_lsp("summary", str(tmp_path / "broken.ipynb"))
    assert "| MLP() · cell 5:4 **(failed)** | [8, 20] |" in summary.stdout  # the model's call, in its cell
    assert "| └─ fc1: Linear(in_features=20, out_features=64, bias=True) | [8, 20] | [8, 64] | 1,344 |" in summary.stdout
    assert "**TL201** (cell 3:9): fc2 (nn.Linear) expects 32 input features but got 64" in summary.stdout
