"""`torch-lsp memory FILE` through the worker: the step's breakdown, `--batch`, the batch limit
for `--gpu-memory`, and files that cannot be measured."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES, ROOT

SEED = FIXTURES / "cifar10_seed.py"


def memory(*arguments: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch_lsp", "memory", *arguments], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.slow  # the CLI's shape worker (a process that imports torch)
def test_memory_json_with_a_batch_limit():
    result = memory("--format", "json", "--gpu-memory", "2", str(SEED))
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    step = found["memory"]
    assert step["training"] and step["batch"] == 32
    assert set(step["breakdown"]) == {"weights", "buffers", "grads", "optimizer", "activations", "other", "workspace"}
    assert step["breakdown"]["workspace"] == 2 * 33 * 2**20  # cuBLAS, for the forward and the backward thread
    assert step["breakdown"]["weights"] == step["breakdown"]["optimizer"]  # SGD momentum: one buffer each
    assert step["peak"] == sum(step["breakdown"].values())
    search = found["search"]
    assert search["points"][:2] == [[32, search["points"][0][1]], [64, search["points"][1][1]]]
    largest = search["largest_batch"]
    assert search["fixed_bytes"] + search["bytes_per_sample"] * largest <= search["usable_bytes"]
    assert found["capacityGib"] == 2 and f"{largest:,}" in found["markdown"]


@pytest.mark.slow  # the CLI's shape worker (a process that imports torch)
def test_memory_at_another_batch_and_the_text_form():
    result = memory("--batch", "128", "--depth", "1", str(SEED))
    assert result.returncode == 0, result.stderr
    assert "at batch 128 (weights" in result.stdout
    assert "| └─ conv1: Conv2d | [128, 6, 28, 28] |" in result.stdout
    assert "| forward and backward |" in result.stdout and "| optimizer step |" in result.stdout


def test_files_that_cannot_be_measured(tmp_path):
    missing = memory(str(tmp_path / "missing.py"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    result = memory(str(broken), cwd=tmp_path)
    assert result.returncode == 1 and "No training step or forward pass was measured" in result.stdout
    assert "syntax error" in result.stdout


@pytest.mark.slow  # the CLI's shape worker (a process that imports torch)
def test_a_batch_built_in_the_file_is_said_so(tmp_path):
    script = tmp_path / "no_loader.py"
    script.write_text("import torch, torch.nn as nn\nmodel = nn.Linear(64, 64)\n"
                      "for step in range(3):\n    model(torch.randn(16, 64)).sum().backward()\n")
    result = memory("--batch", "128", "--gpu-memory", "8", str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "at batch 16" in result.stdout and "--batch 128 had no effect" in result.stdout
    assert "does not change the step's memory" in result.stdout


@pytest.mark.slow  # the CLI's shape worker (a process that imports torch)
def test_a_notebook_is_measured_as_its_program(tmp_path):
    """The code cells run as one program (as `torch-lsp shapes` runs them): the same step as the
    same code in a `.py` file, the loop placed in its cell. (Read as Python, the notebook's JSON
    was a dict literal: "forward peak ≈ 0 B".)"""
    from tests.notebooks import TRAINING_WITH_MAGICS, as_python_file, write_notebook

    path = write_notebook(tmp_path / "training.ipynb", TRAINING_WITH_MAGICS)
    result = memory("--format", "json", "--gpu-memory", "1", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    script = tmp_path / "training.py"
    script.write_text(as_python_file(TRAINING_WITH_MAGICS)[0].replace("%", "# %").replace("!echo", "# !echo")
                      .replace("MLP?", "# MLP?").replace("display(", "print("))
    same = json.loads(memory("--format", "json", "--gpu-memory", "1", str(script), cwd=tmp_path).stdout)
    step = found["memory"]
    assert step["training"] and step["batch"] == 32
    assert (step["peak"], step["breakdown"]) == (same["memory"]["peak"], same["memory"]["breakdown"])
    assert found["search"]["largest_batch"] == same["search"]["largest_batch"] > 0
    assert step["line"]["place"] == "cell 7:3"  # `for batch, labels in loader:` under `%%time`
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    refused = memory(str(broken), cwd=tmp_path)
    assert refused.returncode == 2 and "broken.ipynb" in refused.stderr and "Traceback" not in refused.stderr
