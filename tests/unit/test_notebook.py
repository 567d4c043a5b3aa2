"""A notebook as one program (analysis/notebook.py) and IPython syntax neutralised line for line
(analysis/magics.py): pure, no server."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.inputtransformer2 import TransformerManager

from torch_lsp.analysis.check import analyze_source
from torch_lsp.analysis.facts import Fix, Position, Span, TextEdit
from torch_lsp.analysis.magics import neutralise
from torch_lsp.analysis.notebook import NotebookFormatError, NotebookProgram, read_ipynb
from torch_lsp.analysis.rules._edits import apply_edits
from tests.notebooks import TRAINING, TRAINING_WITH_MAGICS, as_python_file, code_cells, write_notebook

MAGIC_CELL = """\
%matplotlib inline
import torch
!pip install torchvision
files = !ls
names = %who_ls
torch.nn.Linear?
??torch.nn
print("what?")  # really?
text = '''
%not a magic inside a string
'''
y = (1
%2)
for i in range(2):
    %time print(i)
    !echo hi
%time z = torch.zeros(3)
%timeit torch.zeros(3)
x = 5 % 3"""


def test_magics_become_python_and_every_other_line_stays():
    cell = neutralise(MAGIC_CELL)
    original = MAGIC_CELL.split("\n")
    assert len(cell.lines) == len(original)
    compile(cell.text, "<cell>", "exec")
    assert cell.lines[0] == "#matplotlib inline"  # same length: columns after it cannot move
    assert cell.lines[2] == "#pip install torchvision"
    assert cell.lines[3] == "files = []" and cell.lines[4] == "names = None"  # the names stay bound
    assert cell.lines[5].startswith("#") and cell.lines[6].startswith("#")
    assert cell.lines[14] == "    print(i)" and cell.lines[15] == "    pass"  # inside a block
    assert cell.lines[16] == "z = torch.zeros(3)"  # %time runs its statement in the namespace
    changed = {i for i, (a, b) in enumerate(zip(original, cell.lines)) if a != b}
    assert changed == {0, 2, 3, 4, 5, 6, 14, 15, 16, 17}  # not the string, the `%` operators
    assert cell.shifts[16].to_cell(0) == len("%time ") and cell.shifts[16].to_python(8) == 2


def test_the_lines_ipython_transforms_are_the_lines_neutralised():
    """IPython's own transformer is the reference for what is IPython syntax."""
    transformed = TransformerManager().transform_cell(MAGIC_CELL + "\n").split("\n")
    original = MAGIC_CELL.split("\n")
    by_ipython = {i for i, (a, b) in enumerate(zip(original, transformed)) if a != b}
    cell = neutralise(MAGIC_CELL)
    assert by_ipython == set(cell.magic_lines) | set(cell.shifts)


@pytest.mark.parametrize("magic, keeps_body", [("%%time", True), ("%%capture out", True), ("%%bash", False),
                                               ("%%writefile model.py", False), ("%%html", False)])
def test_cell_magics_keep_a_python_body_and_blank_any_other(magic, keeps_body):
    body = "x = 1\nprint(x)"
    cell = neutralise(f"\n{magic}\n{body}")
    assert cell.lines[0] == "" and cell.lines[1] == "#" + magic[1:]
    assert (cell.lines[2:] == ("x = 1", "print(x)")) is keeps_body
    if not keeps_body:
        assert cell.lines[2:] == ("", "")


def test_a_magic_continued_with_a_backslash_is_neutralised_to_its_end():
    cell = neutralise("%load_ext \\\n    autoreload\nx = 1")
    compile(cell.text, "<cell>", "exec")
    assert cell.lines[2] == "x = 1"


def test_program_puts_code_cells_in_order_with_a_separator_line():
    program = NotebookProgram(["import torch", "x = torch.ones(2)\n", "y = x"])
    assert program.source == "import torch\n\nx = torch.ones(2)\n\n\ny = x\n\n"
    assert program.starts == [0, 2, 5]
    assert program.to_program(1, Position(0, 4)) == Position(2, 4)
    assert program.locate(Position(5, 2)) == (2, Position(0, 2))
    assert program.locate(Position(1, 0)) == (0, Position(0, 12))  # a separator: the end of its cell


@given(st.lists(st.text(alphabet="ab =\n%!", max_size=30), min_size=1, max_size=5), st.data())
@settings(max_examples=200, deadline=None)
def test_cell_positions_round_trip_through_the_program(cells, data):
    program = NotebookProgram(cells)
    cell = data.draw(st.integers(0, len(cells) - 1))
    lines = program.cell_lines(cell)
    line = data.draw(st.integers(0, len(lines) - 1))
    col = data.draw(st.integers(0, len(lines[line])))
    at = program.to_program(cell, Position(line, col))
    assert program.locate(at) == (cell, Position(line, col)) or line in program.magic_lines(cell)


def test_a_cell_that_does_not_parse_is_left_out_and_the_others_are_analysed():
    cells = [cell for _, cell in code_cells(TRAINING)]
    cells.insert(2, "def broken(:\n    pass")
    program = NotebookProgram(cells)
    assert program.left_out == (2,)
    assert program.source.split("\n")[program.starts[2]: program.starts[2] + 2] == ["", ""]
    findings = analyze_source(program.source, "nb.ipynb").findings
    assert {program.locate_span(f.span)[0] for f in findings} == {3, 5}  # TL111 (data), TL101 (loop)


def test_findings_per_cell_equal_those_of_the_same_code_as_a_python_file():
    cells = code_cells(TRAINING)
    program = NotebookProgram([source for _, source in cells])
    in_notebook = set()
    for finding in analyze_source(program.source, "training.ipynb").findings:
        cell, span = program.locate_span(finding.span)
        in_notebook.add((cells[cell][0], span.start.line, span.start.col, finding.code, finding.message))
    source, origin = as_python_file(TRAINING)
    in_file = {(*origin[f.span.start.line], f.span.start.col, f.code, f.message)
               for f in analyze_source(source, "training.py").findings}
    assert in_notebook == in_file
    assert {code for *_, code, _ in in_file} >= {"TL101", "TL111"}


def test_magics_do_not_change_the_findings_of_the_cells():
    def per_cell(notebook):
        program = NotebookProgram([source for _, source in code_cells(notebook)])
        found = set()
        for finding in analyze_source(program.source, "nb.ipynb").findings:
            cell, span = program.locate_span(finding.span)
            found.add((cell, finding.code, program.cell_lines(cell)[span.start.line][span.start.col:]))
        return found

    assert per_cell(TRAINING_WITH_MAGICS) == per_cell(TRAINING)


def test_an_insertion_after_a_cell_lands_at_the_end_of_that_cell():
    program = NotebookProgram(["a = 1", "b = 2\n"])
    after_first = Position(1, 0)  # the separator line
    cell, edit = program.edit_in_cell(TextEdit(Span(after_first, after_first), "c = 3\n"))
    assert cell == 0 and apply_edits("a = 1", (edit,)) == "a = 1\nc = 3"
    after_second = Position(program.starts[1] + 2, 0)
    cell, edit = program.edit_in_cell(TextEdit(Span(after_second, after_second), "d = 4\n"))
    assert cell == 1 and apply_edits("b = 2\n", (edit,)) == "b = 2\nd = 4\n"


def test_a_fix_is_split_by_cell_and_refused_across_cells():
    program = NotebookProgram(["a = 1", "b = 2"])
    fix = Fix("two cells", (TextEdit(Span.of(0, 4, 0, 5), "10"), TextEdit(Span.of(2, 4, 2, 5), "20")))
    by_cell = program.fix_by_cell(fix)
    assert by_cell == {0: [TextEdit(Span.of(0, 4, 0, 5), "10")], 1: [TextEdit(Span.of(0, 4, 0, 5), "20")]}
    across = Fix("across", (TextEdit(Span.of(0, 0, 2, 0), ""),))
    assert program.fix_by_cell(across) is None


def test_read_ipynb_reads_nbformat_files(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", TRAINING)
    cells = read_ipynb(path.read_text())
    assert [(c.kind, c.source) for c in cells] == TRAINING
    assert [c.index for c in cells] == list(range(len(TRAINING)))


@pytest.mark.parametrize("text, message", [("{not json", "invalid JSON"),
                                           (json.dumps({"nbformat": 3, "worksheets": []}), "nbformat 3"),
                                           ("[]", "not an nbformat 4 notebook")])
def test_read_ipynb_says_what_is_wrong(text, message):
    with pytest.raises(NotebookFormatError, match=message):
        read_ipynb(text)


def test_the_plan_of_a_notebook_leaves_out_what_only_ipython_defines():
    from torch_lsp.analysis.plan import build_plan

    source = NotebookProgram(["import torch\nx = torch.ones(2)\ndisplay(x)",
                              'get_ipython().run_line_magic("matplotlib", " inline")\nfiles = get_ipython().getoutput("ls")',
                              "def show(t):\n    display(t)"]).source
    plan = build_plan(source, "/work/training.ipynb")
    assert "display(" not in plan.source and "get_ipython(" not in plan.source
    assert len(plan.source.split("\n")) == len(source.split("\n"))
    assert [n.line for n in plan.neutralised] == [2, 4, 5, 8]
    assert "display(x)" in build_plan(source, "/work/training.py").source  # a .py file: the user's NameError
    bound = build_plan("from IPython.display import display\ndisplay(1)\n", "/work/nb.ipynb")
    assert "display(1)" in bound.source
