"""Notebooks for the tests, written with nbformat, and helpers to run them and compare them
with the same code as one `.py` file.

Cells are `(kind, source)` pairs; kinds are nbformat's ("code", "markdown").
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

Cells = list[tuple[str, str]]

IMPORTS = """\
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset"""

MODEL = """\
class MLP(nn.Module):
    def __init__(self, in_features=20, hidden=64, classes=3):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc2(h)"""

DATA = """\
torch.manual_seed(0)
features = torch.randn(256, 20)
targets = torch.randint(0, 3, (256,))
loader = DataLoader(TensorDataset(features, targets), batch_size=32)"""

SETUP = """\
model = MLP()
loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
out = model(features[:8])"""

# Gradients are never cleared: TL101 on the optimizer.step() line (line 4 of the cell).
LOOP = """\
for epoch in range(2):
    for batch, labels in loader:
        loss = loss_fn(model(batch), labels)
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch + 1}: loss {loss.item():.4f}")"""

# A training notebook with two training mistakes (TL111 in the data cell, TL101 in the loop
# cell) and no IPython syntax: the same code is a valid `.py` file.
TRAINING: Cells = [
    ("markdown", "# An MLP on synthetic data"),
    ("code", IMPORTS),
    ("code", MODEL),
    ("markdown", "## Data"),
    ("code", DATA),
    ("code", SETUP),
    ("code", LOOP),
]

# The same notebook as people write it: magics, shell escapes, help, a cell magic, display().
# Everything here runs in a real kernel (no matplotlib needed).
TRAINING_WITH_MAGICS: Cells = [
    ("markdown", "# An MLP on synthetic data"),
    ("code", "%load_ext autoreload\n%autoreload 2\n" + IMPORTS),
    ("code", MODEL),
    ("markdown", "## Data"),
    ("code", '!echo "synthetic data: nothing to download"\n' + DATA),
    ("code", SETUP + "\nMLP?\ndisplay(out.shape)"),
    ("code", "%%time\n" + LOOP),
]

# Everything a training loop needs but the loop (scaffold tests ask for one).
WITHOUT_LOOP: Cells = [
    ("markdown", "# Train me"),
    ("code", "%load_ext autoreload\n" + IMPORTS),
    ("code", MODEL),
    ("code", DATA.replace("batch_size=32", "batch_size=32, shuffle=True")),
    ("code", SETUP),
    ("code", "print(out.shape)"),
]


def notebook_of(cells: Cells) -> nbformat.NotebookNode:
    made = {"code": new_code_cell, "markdown": new_markdown_cell}
    notebook = new_notebook(cells=[made[kind](source) for kind, source in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def write_notebook(path: Path, cells: Cells) -> Path:
    nbformat.write(notebook_of(cells), str(path))
    return path


def code_cells(cells: Cells) -> list[tuple[int, str]]:
    """(index among all cells, source) of the code cells."""
    return [(index, source) for index, (kind, source) in enumerate(cells) if kind == "code"]


def as_python_file(cells: Cells) -> tuple[str, dict[int, tuple[int, int]]]:
    """The code cells as one `.py` source (a blank line between cells, as people paste them)
    and, for each line of it, (index of the cell among all cells, line in the cell)."""
    parts, origin, line = [], {}, 0
    for index, source in code_cells(cells):
        for offset in range(len(source.split("\n"))):
            origin[line + offset] = (index, offset)
        parts.append(source)
        line += len(source.split("\n")) + 1
    return "\n\n".join(parts) + "\n", origin


def run_cells(cells: Cells, timeout: int = 120) -> nbformat.NotebookNode:
    """Execute the notebook top to bottom in a real IPython kernel (nbclient); raises
    `nbclient.exceptions.CellExecutionError` on the first cell that fails."""
    from nbclient import NotebookClient

    notebook = notebook_of(cells)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3").execute()
    return notebook
