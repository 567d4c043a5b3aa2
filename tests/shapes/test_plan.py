"""The execution plan: what runs, what is neutralised, and that lines never move."""

from torch_lsp.analysis.plan import ExecutionPlan, build_plan

TRAINING_SCRIPT = '''\
import torch
from torch import optim
from torch.utils.data import DataLoader
model = torch.nn.Linear(4, 2)
opt = optim.Adam(model.parameters())
data = DataLoader(dataset, batch_size=8)
for epoch in range(10):
    for x, y in data:
        loss = model(x).sum()
        loss.backward()
        opt.step()
    torch.save(model.state_dict(),
               "model.pt")
for layer in layers:
    h = layer(h)
'''


def test_plan_keeps_every_line_where_it_was():
    plan = build_plan(TRAINING_SCRIPT, "train.py")
    assert len(plan.source.splitlines()) == len(TRAINING_SCRIPT.splitlines())
    for original, planned in zip(TRAINING_SCRIPT.splitlines(), plan.source.splitlines()):
        # Indentation is what line events and co_positions depend on.
        assert len(original) - len(original.lstrip()) == len(planned) - len(planned.lstrip())
    compile(plan.source, "train.py", "exec")


def test_training_loops_run_once_and_model_loops_run_fully():
    plan = build_plan(TRAINING_SCRIPT, "train.py")
    lines = plan.source.splitlines()
    assert lines[6] == "for epoch in __torch_lsp__.once((range(10))):"
    assert lines[7] == "    for x, y in __torch_lsp__.once((data)):"
    assert lines[13] == "for layer in layers:"  # not a training loop: a model's own loop
    assert plan.run_once_loops == ((6, 12), (7, 10))


def test_optimizer_steps_and_checkpoints_are_neutralised():
    plan = build_plan(TRAINING_SCRIPT, "train.py")
    lines = plan.source.splitlines()
    assert "opt.step()" not in plan.source and "__torch_lsp__.skipped(" in lines[10]
    assert "torch.save(" not in plan.source
    assert lines[9] == "        loss.backward()"  # backward stays: its errors are real ones
    assert [n.line for n in plan.neutralised] == [10, 11]


def test_while_training_loop_runs_once():
    plan = build_plan("while True:\n    loss.backward()\n    optimizer.step()\n", "t.py")
    assert plan.source.splitlines()[0] == "while __torch_lsp__.once_while(0) and (True):"


def test_statements_list_the_names_they_bind():
    plan = build_plan("a, (b, c) = f()\nself_x = 1\nx: int = 3\nfor i, v in it:\n    pass\nwith g() as h:\n    pass\n", "t.py")
    binds = {s.line: s.binds for s in plan.statements}
    assert binds[0] == ("a", "b", "c")
    assert binds[2] == ("x",)
    assert binds[3] == ("i", "v")
    assert binds[5] == ("h",)


def test_multi_line_statement_maps_every_line_to_itself():
    plan = build_plan("x = f(\n    1,\n    2)\ny = 1\n", "t.py")
    assert plan.statement_of_line[1].line == 0 and plan.statement_of_line[2].end_line == 2
    assert plan.statement_of_line[3].binds == ("y",)


def test_hash_depends_on_text_and_file_only():
    assert build_plan("x = 1\n", "a.py").hash == build_plan("x = 1\n", "a.py").hash
    assert build_plan("x = 1\n", "a.py").hash != build_plan("x = 2\n", "a.py").hash
    assert build_plan("x = 1\n", "a.py").hash != build_plan("x = 1\n", "b.py").hash


def test_plan_round_trips_through_json_form():
    plan = build_plan(TRAINING_SCRIPT, "train.py")
    again = ExecutionPlan.from_dict(plan.to_dict())
    assert again == plan and again.hash == plan.hash


def test_syntax_error_gives_an_empty_plan_with_a_reason():
    plan = build_plan("def broken(:\n", "t.py")
    assert plan.error and "syntax error" in plan.error and plan.source == ""


def test_a_call_inside_a_removed_call_is_left_to_it_and_later_calls_are_edited():
    source = ('import torch\n'
              'torch.save(torch.load("a.pt"), "b.pt"); w = torch.load("c.pt")\n'
              'for batch in torch.load("batches.pt"):\n'
              '    optimizer.step(torch.save(batch,\n'
              '                              "d.pt"))\n'
              'torch.save(w, "e.pt")\n')
    plan = build_plan(source, "t.py")
    lines = plan.source.splitlines()
    assert lines[1] == ("__torch_lsp__.skipped('torch.save writes a file'); "
                        'w = __torch_lsp__.load("c.pt")')
    assert lines[2] == 'for batch in __torch_lsp__.once((__torch_lsp__.load("batches.pt"))):'
    assert lines[3].startswith("    __torch_lsp__.skipped('optimizer step") and "torch.save(" not in plan.source
    assert len(lines) == len(source.splitlines())
    assert [n.line for n in plan.neutralised] == [1, 1, 2, 3, 5]
    compile(plan.source, "t.py", "exec")
