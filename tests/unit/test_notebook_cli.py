"""`torch-lsp check` on Jupyter notebooks: cell numbers and lines like ruff, folders include
notebooks, JSON with per-cell fixes, bad notebooks get a clear message."""

import json
import re

import nbformat

from tests.conftest import FIXTURES, ROOT
from tests.notebooks import LOOP, TRAINING, TRAINING_WITH_MAGICS, write_notebook
from tests.unit.test_cli import run


def test_check_reports_cell_numbers_and_lines_in_the_cell(tmp_path):
    path = write_notebook(tmp_path / "training.ipynb", TRAINING_WITH_MAGICS)
    result = run("check", "--no-shapes", str(path))
    assert result.returncode == 0, result.stderr  # warnings and infos only
    reported = {}
    for line in result.stdout.splitlines()[:-1]:
        file, cell, number, column, code = re.match(r"(.*):cell (\d+):(\d+):(\d+): (TL\d+) ", line).groups()
        assert file == str(path)
        reported[code] = (int(cell), int(number), int(column))
    # Cell numbers count every cell (markdown too), as Jupyter shows them; lines are the cell's.
    assert reported == {"TL111": (5, 5, 10), "TL101": (7, 6, 9)}
    cell = TRAINING_WITH_MAGICS[6][1].split("\n")
    assert cell[6 - 1][9 - 1:].startswith("optimizer.step()")
    assert run("check", "--no-shapes", "--fail-on", "warning", str(path)).returncode == 1


def test_check_json_gives_the_cell_and_fixes_that_apply_to_the_cells(tmp_path):
    from torch_lsp.analysis.facts import Position, Span, TextEdit
    from torch_lsp.analysis.rules._edits import apply_edits

    path = write_notebook(tmp_path / "training.ipynb", TRAINING)
    found = json.loads(run("check", "--no-shapes", "--format", "json", str(path)).stdout)
    [tl101] = [f for f in found if f["code"] == "TL101"]
    assert (tl101["cell"], tl101["line"], tl101["column"]) == (7, 5, 9)
    notebook = nbformat.read(str(path), as_version=4)
    for finding in found:
        for edit in finding["fix"]["edits"]:
            cell = notebook.cells[edit["cell"] - 1]
            span = Span(Position(edit["start"][0] - 1, edit["start"][1] - 1), Position(edit["end"][0] - 1, edit["end"][1] - 1))
            cell.source = apply_edits(cell.source, (TextEdit(span, edit["newText"]),))
    nbformat.write(notebook, str(path))
    assert json.loads(run("check", "--no-shapes", "--format", "json", str(path)).stdout) == []


def test_check_on_a_folder_includes_notebooks_but_not_checkpoints(tmp_path):
    write_notebook(tmp_path / "training.ipynb", TRAINING)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    write_notebook(tmp_path / ".ipynb_checkpoints" / "training-checkpoint.ipynb", TRAINING)
    (tmp_path / "loop.py").write_text("import torch\n")
    result = run("check", "--no-shapes", "--format", "json", str(tmp_path))
    assert {(f["path"], f["code"]) for f in json.loads(result.stdout)} == {
        (str(tmp_path / "training.ipynb"), "TL101"), (str(tmp_path / "training.ipynb"), "TL111")}


def test_check_says_what_is_wrong_with_a_notebook_and_goes_on(tmp_path):
    (tmp_path / "a_broken.ipynb").write_text("{not json")
    r_notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x <- c(1, 2)")])
    r_notebook.metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    nbformat.write(r_notebook, str(tmp_path / "b_r.ipynb"))
    half_typed = TRAINING[:-1] + [("code", "def train(:\n    pass"), ("code", LOOP)]
    write_notebook(tmp_path / "c_half_typed.ipynb", half_typed)
    result = run("check", "--no-shapes", str(tmp_path))
    # What could not be analysed is an error finding (TL001): CI must not pass over it.
    assert "a_broken.ipynb:1:1: TL001 not a notebook (invalid JSON" in result.stdout
    assert "c_half_typed.ipynb:cell 7:1:1: TL001 syntax error (cell not analysed)" in result.stdout
    assert result.returncode == 1
    assert "b_r.ipynb: a R notebook, not Python (skipped)" in result.stderr  # not a Python file
    assert "c_half_typed.ipynb:cell 8:5:9: TL101" in result.stdout  # the other cells still are
    assert "Traceback" not in result.stderr


def test_the_fixture_notebook_is_the_one_the_tests_write():
    """fixtures/notebooks/training.ipynb was written by `write_notebook(TRAINING_WITH_MAGICS)`."""
    notebook = nbformat.read(str(FIXTURES / "notebooks" / "training.ipynb"), as_version=4)
    nbformat.validate(notebook)
    assert [(cell.cell_type, cell.source) for cell in notebook.cells] == TRAINING_WITH_MAGICS
