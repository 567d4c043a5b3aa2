"""EditPlan: minimal edits that keep the rest of the file byte for byte, and refuse unsafe ones."""

import pytest

from harness import apply_edits
from torch_lsp.analysis.facts import Span
from torch_lsp.analysis.syntax import parse
from torch_lsp.scaffold import ScaffoldContext
from torch_lsp.scaffold.codemod import CannotEdit, EditPlan, reindent, render


def plan_for(source: str) -> EditPlan:
    return EditPlan(ScaffoldContext(parse(source), Span.of(0, 0, 0, 0)))


def result(plan: EditPlan) -> str:
    return apply_edits(plan.parsed.source, plan.to_fix("t").edits)


def statement(plan: EditPlan, index: int, *path: int):
    node = plan.parsed.tree.body[index]
    for child in path:
        node = node.body[child]
    return node


def test_insert_before_and_after_use_the_statement_indentation():
    plan = plan_for("for i in range(3):\n    a = i  # keep\n    b = a\n")
    plan.insert_before(statement(plan, 0, 0), "start()\n")
    plan.insert_after(statement(plan, 0, 0), "middle()\n")
    plan.insert_at_body_end(statement(plan, 0), "if i:\n    end()\n")
    assert result(plan) == ("for i in range(3):\n    start()\n    a = i  # keep\n    middle()\n    b = a\n"
                            "    if i:\n        end()\n")


def test_insertions_at_one_place_keep_their_planned_order():
    plan = plan_for("x = 1\n")
    plan.insert_after(statement(plan, 0), "first = 1\n")
    plan.insert_after(statement(plan, 0), "second = 2\n")
    assert result(plan) == "x = 1\nfirst = 1\nsecond = 2\n"


def test_two_space_and_tab_files_get_their_own_indentation():
    plan = plan_for("def f():\n  x = 1\n")
    plan.insert_after(statement(plan, 0, 0), "if x:\n    y = 2\n")
    assert result(plan) == "def f():\n  x = 1\n  if x:\n    y = 2\n"
    plan = plan_for("def f():\n\tx = 1\n")
    plan.insert_after(statement(plan, 0, 0), "if x:\n    y = 2\n")
    assert result(plan) == "def f():\n\tx = 1\n\tif x:\n\t\ty = 2\n"


def test_insert_after_the_last_line_without_a_newline():
    plan = plan_for("x = 1")
    plan.insert_after(statement(plan, 0), "y = 2\n")
    assert result(plan) == "x = 1\ny = 2\n"


def test_statements_sharing_a_line_are_refused():
    plan = plan_for("a = 1; b = 2\n")
    with pytest.raises(CannotEdit):
        plan.insert_after(statement(plan, 0), "c = 3\n")


def test_insert_before_can_go_above_the_comments_that_introduce_a_statement():
    plan = plan_for("x = 1\n\n# train\n# (really)\nfor i in x:\n    pass\n")
    plan.insert_before(statement(plan, 1), "def f():\n    pass\n\n\n", above_comments=True)
    assert result(plan) == "x = 1\n\ndef f():\n    pass\n\n\n# train\n# (really)\nfor i in x:\n    pass\n"


@pytest.mark.parametrize("call, expected", [
    ("f()", "f(k=1)"),
    ("f(a, b=2)", "f(a, b=2, k=1)"),
    ("f(a,)", "f(a, k=1,)"),
    ("f(\n    a,\n    b,\n)", "f(\n    a,\n    b,\n    k=1,\n)"),
    ("f(\n    a,\n)", "f(\n    a,\n    k=1,\n)"),
    ("f(a,  # first\n  b)", "f(a,  # first\n  b, k=1)"),
    ("f(a, k=0)", "f(a, k=1)"),
])
def test_set_keyword_keeps_the_call_layout(call, expected):
    plan = plan_for(f"x = {call}\ny = 2\n")
    plan.set_keyword(plan.parsed.tree.body[0].value, "k", "1")
    assert result(plan) == f"x = {expected}\ny = 2\n"


def test_reference_uses_the_file_imports_and_adds_a_missing_one_once():
    plan = plan_for('"""doc"""\nimport torch.optim as optim\nfrom torch import nn\n\nx = 1\n')
    assert plan.reference("torch.optim.lr_scheduler.StepLR") == "optim.lr_scheduler.StepLR"
    assert plan.reference("torch.nn.Dropout") == "nn.Dropout"
    assert plan.reference("torch.no_grad") == "torch.no_grad"
    assert plan.reference("torch.device") == "torch.device"
    plan.insert_after(statement(plan, -1), "y = torch.device('cpu')\n")
    assert result(plan) == ('"""doc"""\nimport torch.optim as optim\nfrom torch import nn\nimport torch\n\nx = 1\n'
                            "y = torch.device('cpu')\n")


def test_reference_to_a_submodule_needs_that_submodule_imported():
    plan = plan_for("import torchvision\n")
    assert plan.reference("torchvision.transforms.v2.RandomCrop", module="torchvision.transforms.v2") == \
        "torchvision.transforms.v2.RandomCrop"
    assert "import torchvision.transforms.v2\n" in result(plan)
    plan = plan_for("from torchvision.transforms import v2\n")
    assert plan.reference("torchvision.transforms.v2.RandomCrop", module="torchvision.transforms.v2") == "v2.RandomCrop"


def test_wrap_in_with_leaves_multiline_strings_alone():
    source = 'for b in xs:\n    out = model(b)\n    note = """\nline\n"""\n    done = 1\n'
    plan = plan_for(source)
    loop = statement(plan, 0)
    plan.wrap_in_with(loop.body[:2], "torch.autocast('cpu')")
    assert result(plan) == ('for b in xs:\n    with torch.autocast(\'cpu\'):\n        out = model(b)\n'
                            '        note = """\nline\n"""\n    done = 1\n')


def test_a_plan_that_would_not_parse_is_refused():
    plan = plan_for("x = 1\n")
    plan.insert_after(statement(plan, 0), "def broken(:\n")
    with pytest.raises(CannotEdit):
        plan.to_fix("t")


def test_overlapping_edits_are_refused():
    plan = plan_for("x = f(1)\n")
    call = plan.parsed.tree.body[0].value
    plan.replace_node(call, "g(1)")
    plan.replace_node(call.func, "h")
    with pytest.raises(CannotEdit):
        plan.to_fix("t")


def test_render_and_reindent():
    code = render("""
        for $x in $items:
            print($x, "{braces} stay")
    """, x="item", items="loader")
    assert code == 'for item in loader:\n    print(item, "{braces} stay")\n'
    assert reindent(code, "  ", "  ") == '  for item in loader:\n    print(item, "{braces} stay")\n'


def test_definitions_get_two_blank_lines_around_them():
    plan = plan_for("x = 1\n\n# loop\nfor i in x:\n    pass\n")
    plan.insert_definition_before(statement(plan, 1), "def f():\n    pass\n")
    assert result(plan) == "x = 1\n\n\ndef f():\n    pass\n\n\n# loop\nfor i in x:\n    pass\n"
    plan = plan_for("for i in x:\n    pass\n")
    plan.insert_definition_before(statement(plan, 0), "def f():\n    pass\n")
    assert result(plan) == "def f():\n    pass\n\n\nfor i in x:\n    pass\n"
