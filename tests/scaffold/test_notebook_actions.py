"""Code actions in notebooks, without a server: offered per cell on the program of the cells
that have run by then, written into the cell where they are asked for (imports into the first
code cell), and `torch-lsp actions` on an .ipynb file."""

from __future__ import annotations

import json

import nbformat

from tests.notebooks import WITHOUT_LOOP, code_cells, write_notebook
from torch_lsp import scaffold
from torch_lsp.analysis.check import analyze_source
from torch_lsp.analysis.facts import Position, Span
from torch_lsp.analysis.notebook import NotebookProgram
from torch_lsp.analysis.rules._edits import apply_edits
from torch_lsp.cli import main

CELLS = [source for _, source in code_cells(WITHOUT_LOOP)]  # imports, model, data, setup, print
SETUP = 3


def at(program: NotebookProgram, cell: int, line: int = 0, col: int = 0) -> Span:
    position = program.to_program(cell, Position(line, col))
    return Span(position, position)


def offered(program: NotebookProgram, cell: int, line: int = 0, col: int = 0) -> set[str]:
    return {offer.id for offer in scaffold.offers_in_cell(program, cell, at(program, cell, line, col))}


def test_an_action_is_offered_where_the_cells_run_so_far_make_it_possible():
    program = NotebookProgram(CELLS)
    assert "loop.train" in offered(program, SETUP, 0, 1)  # on `model`, after data and optimizer exist
    # On the model's class, in its own cell, the loader does not exist yet when that cell runs.
    assert "loop.train" not in offered(program, 1, 0, 6)
    # Once a later cell trains, no cell is offered another training loop.
    trained = NotebookProgram(CELLS + ["for x, y in loader:\n    optimizer.zero_grad()\n"
                                       "    loss_fn(model(x), y).backward()\n    optimizer.step()"])
    assert "loop.train" not in offered(trained, SETUP, 0, 1)


def test_the_loop_goes_into_the_asked_cell_and_imports_into_the_first():
    program = NotebookProgram(CELLS)
    by_cell = program.fix_by_cell(scaffold.build_in_cell(program, SETUP, "loop.train", at(program, SETUP, 0, 1)))
    assert set(by_cell) == {SETUP}
    written = apply_edits(CELLS[SETUP], by_cell[SETUP])
    assert written.startswith(CELLS[SETUP]) and "for epoch in range(num_epochs):" in written
    seeded = program.fix_by_cell(scaffold.build_in_cell(program, SETUP, "reproducibility.seed", at(program, SETUP)))
    assert set(seeded) == {0}  # `import random`, `import os` and the function: all in the first cell
    first = apply_edits(CELLS[0], seeded[0])
    assert first.index("import random") < first.index("def seed_everything") < first.index("seed_everything(SEED)")
    after = [written if i == SETUP else apply_edits(c, seeded[0]) if i == 0 else c for i, c in enumerate(CELLS)]
    assert analyze_source(NotebookProgram(after).source, "nb.ipynb").findings == []


def test_cli_lists_and_applies_actions_in_a_notebook(capsys, tmp_path):
    path = write_notebook(tmp_path / "train_me.ipynb", WITHOUT_LOOP)
    original = path.read_text()
    assert main(["actions", str(path)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert f"{path}:cell 5:1: loop.train  Write a training loop for `model`" in listed
    assert main(["actions", str(path), "--cell", "5", "--line", "1", "--apply", "loop.train", "--diff"]) == 0
    diff = capsys.readouterr().out
    assert diff.startswith(f"--- {path}:cell 5\n+++ {path}:cell 5 (loop.train)\n")
    assert "+for epoch in range(num_epochs):" in diff
    assert main(["actions", str(path), "--cell", "5", "--line", "1", "--apply", "reproducibility.seed"]) == 0
    notebook = nbformat.reads(capsys.readouterr().out, as_version=4)
    nbformat.validate(notebook)
    assert "import random" in notebook.cells[1].source and notebook.cells[4].source == WITHOUT_LOOP[4][1]
    assert path.read_text() == original  # never written
    assert main(["actions", str(path), "--cell", "1", "--line", "1"]) == 2  # a markdown cell
    assert "cell 1 is not a code cell (code cells: 2, 3, 4, 5, 6)" in capsys.readouterr().err
    assert main(["actions", str(path), "--cell", "5", "--line", "1", "--apply", "loop.evaluate"]) == 1
    assert main(["actions", str(path), "--format", "json", "--cell", "3"]) == 0
    assert {entry["cell"] for entry in json.loads(capsys.readouterr().out)} == {3}
