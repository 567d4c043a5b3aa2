"""Regularisers: each one offered where it belongs, written with the file's names, and taking
effect when the program runs (weight_decay in param_groups, clipped gradients, active dropout,
the penalty inside the loss, label smoothing on the loss, training that stops early)."""

import pytest

from harness import (apply_action, assert_no_new_findings, assert_preserved, fixture, inserted_text, offered,
                     span_at)
from probe_points import insert_line, run_programs

AMP_LOOP = '''
import torch
from torch import nn

model = nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler(enabled=False)
data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
for epoch in range(2):
    for x, y in data:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
'''[1:]


def apply(source: str, offer_id: str, needle: str) -> str:
    result = apply_action(source, offer_id, span_at(source, needle))
    assert_preserved(source, result)
    assert_no_new_findings(source, result)
    return result


# -- where they are offered --------------------------------------------------------------------------
def test_offered_where_the_piece_lives_and_only_while_absent():
    seed = fixture("cifar10_seed.py")
    assert {"reg.weight_decay"} <= set(offered(seed, span_at(seed, "optimizer = optim.SGD")))
    assert "reg.adamw" not in offered(seed, span_at(seed, "optimizer = optim.SGD"))  # SGD, not Adam
    assert "reg.label_smoothing" in offered(seed, span_at(seed, "criterion = nn.CrossEntropyLoss"))
    assert "reg.dropout" in offered(seed, span_at(seed, "class Net"))
    in_loop = set(offered(seed, span_at(seed, "loss.backward()")))
    assert {"reg.clip_grad", "reg.l1_penalty", "reg.l2_penalty", "reg.early_stopping"} <= in_loop
    assert not {o for o in offered(seed, span_at(seed, "import os")) if o.startswith("reg.")}
    no_loop = fixture("no_loop.py")
    assert {"reg.weight_decay", "reg.adamw"} <= set(offered(no_loop, span_at(no_loop, "optimizer = torch.optim.Adam")))
    assert "reg.clip_grad" not in offered(no_loop, span_at(no_loop, "optimizer = torch.optim.Adam"))  # no loop
    # AdamW already decays weights by default; a loss other than CrossEntropyLoss has no label smoothing.
    adamw = no_loop.replace("torch.optim.Adam(", "torch.optim.AdamW(")
    assert "reg.weight_decay" not in offered(adamw, span_at(adamw, "optimizer = torch.optim.AdamW"))
    mse = seed.replace("nn.CrossEntropyLoss()", "nn.MSELoss()")
    assert "reg.label_smoothing" not in offered(mse, span_at(mse, "criterion = nn.MSELoss"))
    # L2 on top of weight decay would decay twice.
    decayed = seed.replace("momentum=0.9)", "momentum=0.9, weight_decay=5e-4)")
    assert "reg.l2_penalty" not in offered(decayed, span_at(decayed, "loss.backward()"))
    assert "reg.weight_decay" not in offered(decayed, span_at(decayed, "loss.backward()"))


# -- snapshots --------------------------------------------------------------------------------------
def test_snapshots_of_the_inserted_code():
    seed = fixture("cifar10_seed.py")
    assert inserted_text(seed, apply(seed, "reg.clip_grad", "loss.backward()")) == \
        "        nn.utils.clip_grad_norm_(net.parameters(), max_norm=1.0)\n"
    assert inserted_text(seed, apply(seed, "reg.dropout", "class Net")) == (
        "        self.dropout = nn.Dropout(p=0.5)\n"
        "        x = self.dropout(x)\n"
        "        x = self.dropout(x)\n")
    dropped = apply(seed, "reg.dropout", "class Net")
    assert "x = F.relu(self.fc1(x))\n        x = self.dropout(x)\n        x = F.relu(self.fc2(x))\n" \
           "        x = self.dropout(x)\n        x = self.fc3(x)\n" in dropped
    assert "criterion = nn.CrossEntropyLoss(label_smoothing=0.1)\n" in apply(seed, "reg.label_smoothing", "criterion =")
    no_loop = fixture("no_loop.py")
    decayed = apply(no_loop, "reg.weight_decay", "optimizer = torch")
    assert "optimizer = torch.optim.Adam(\n    model.parameters(),\n    lr=1e-3,\n    weight_decay=1e-4,\n)\n" in decayed
    assert "optimizer = torch.optim.AdamW(\n" in apply(no_loop, "reg.adamw", "optimizer = torch")
    sequential = fixture("missing_zero_grad.py")
    assert "nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Dropout(p=0.5), nn.Linear(64, 2))" in \
        apply(sequential, "reg.dropout", "model = nn.Sequential")


def test_clipping_under_a_grad_scaler_unscales_first():
    result = apply(AMP_LOOP, "reg.clip_grad", "scaler.step")
    assert "        scaler.unscale_(optimizer)\n        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n" \
           "        scaler.step(optimizer)\n" in result


# -- effects in real runs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    programs = {}

    seed = fixture("cifar10_seed.py")
    combo = apply(seed, "reg.weight_decay", "optimizer = optim.SGD")
    combo = apply(combo, "reg.label_smoothing", "criterion = nn.CrossEntropyLoss")
    combo = apply(combo, "reg.clip_grad", "loss.backward()")
    combo = apply(combo, "reg.dropout", "class Net")
    programs["seed_combo"] = combo.replace("max_norm=1.0", "max_norm=0.05") + '''
probe("weight_decay", optimizer.param_groups[0]["weight_decay"])
probe("label_smoothing", criterion.label_smoothing)
probe("grad_norm", torch.norm(torch.stack([p.grad.norm() for p in net.parameters()])).item())
probe("dropouts", [type(m).__name__ for m in net.modules() if isinstance(m, nn.Dropout)])
sample = torch.randn(4, 3, 32, 32)
net.train()
probe("train_differs", not torch.equal(net(sample), net(sample)))
net.eval()
probe("eval_same", torch.equal(net(sample), net(sample)))
'''

    with_loop = fixture("with_loop.py")
    penalised = apply(with_loop, "reg.l1_penalty", "loss.backward()")
    penalised = apply(penalised, "reg.l2_penalty", "loss.backward()")
    programs["penalties"] = insert_line(penalised, "loss = loss + l2_lambda", (
        "probe('loss', [loss.item(), loss_fn(logits, batch_y).item(), "
        "sum(p.abs().sum() for p in model.parameters()).item(), sum(p.pow(2).sum() for p in model.parameters()).item()])"))

    stopping = apply(with_loop, "reg.early_stopping", "loss.backward()")
    # A zero learning rate keeps the validation loss flat: with patience 1 training stops after epoch 2.
    programs["early_stop"] = stopping.replace("lr=0.1", "lr=0.0").replace("patience = 5", "patience = 1") + \
        "probe('epochs_run', epoch + 1)\n"
    seed_stopping = apply(seed, "reg.early_stopping", "loss.backward()")
    programs["seed_early_stop"] = insert_line(seed_stopping, "if val_loss < best_val_loss:", "probe('val', val_loss)",
                                              before=True) + "probe('best', best_val_loss)\n"

    no_loop = fixture("no_loop.py")
    trained = apply(no_loop, "loop.train", "model = MLP")
    trained = apply(trained, "reg.weight_decay", "optimizer = torch.optim.Adam")
    trained = apply(trained, "reg.adamw", "optimizer = torch.optim.Adam")
    programs["adamw"] = trained + ('probe("optimizer", [type(optimizer).__name__, '
                                   'optimizer.param_groups[0]["weight_decay"]])\n')

    sequential = apply(fixture("missing_zero_grad.py"), "reg.dropout", "model = nn.Sequential")
    programs["sequential_dropout"] = sequential + "probe('layers', [type(m).__name__ for m in model])\n"

    amp = apply(AMP_LOOP, "reg.clip_grad", "scaler.step").replace("max_norm=1.0", "max_norm=0.01")
    programs["amp_clip"] = amp + "probe('grad_norm', torch.norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())\n"
    programs["in_main"] = insert_line(compose_in_main(), "return net, opt", (
        "probe('state', [type(opt).__name__, opt.param_groups[0]['weight_decay'], "
        "[type(m).__name__ for m in net.modules()], scheduler.last_epoch, epoch + 1])"), before=True)
    return run_programs(programs, tmp_path_factory.mktemp("regularisers"), env={"EPOCHS": "6"}, timeout=240)


# Applied one after the other to a program whose training lives in main() (two-space indents).
COMPOSITION = [("scheduler.warmup_cosine", "opt = torch"), ("reg.early_stopping", "loss.backward"),
               ("reg.clip_grad", "loss.backward"), ("reg.weight_decay", "opt = torch"), ("reg.adamw", "opt = torch"),
               ("reg.dropout", "class Net"), ("reg.l1_penalty", "loss.backward"), ("reg.label_smoothing", "loss_fn =")]


def compose_in_main() -> str:
    source = fixture("in_main.py")
    for offer_id, needle in COMPOSITION:
        source = apply(source, offer_id, needle)
    return source


@pytest.mark.slow  # trains the generated program for real
def test_actions_compose_inside_main_with_two_space_indents(runs):
    result = compose_in_main()
    assert "\n  scheduler = torch.optim.lr_scheduler.SequentialLR(\n    opt,\n" in result
    assert "\n      nn.utils.clip_grad_norm_(net.parameters(), max_norm=1.0)\n      opt.step()\n" in result
    assert result.index("def evaluate(") < result.index("def main():")
    optimizer, decay, modules, scheduler_steps, epochs = runs.probe("in_main.state")
    assert (optimizer, decay) == ("AdamW", 1e-4) and "Dropout" in modules
    assert scheduler_steps == epochs  # stepped once per epoch, early stop or not


@pytest.mark.slow  # trains the generated program for real
def test_weight_decay_label_smoothing_clipping_and_dropout_take_effect(runs):
    assert runs.probe("seed_combo.weight_decay") == 5e-4
    assert runs.probe("seed_combo.label_smoothing") == 0.1
    assert runs.probe("seed_combo.grad_norm") <= 0.05 * (1 + 1e-4)  # the last step's gradients, clipped
    assert runs.probe("seed_combo.dropouts") == ["Dropout"]
    assert runs.probe("seed_combo.train_differs") is True and runs.probe("seed_combo.eval_same") is True
    assert runs.probe("sequential_dropout.layers") == ["Linear", "ReLU", "Dropout", "Linear"]
    assert runs.probe("amp_clip.grad_norm") <= 0.01 * (1 + 1e-4)


@pytest.mark.slow  # trains the generated program for real
def test_penalties_are_part_of_the_loss_that_is_backpropagated(runs):
    values = runs.probes("penalties.loss")
    assert len(values) == 6 * 4  # EPOCHS=6, 64 samples in batches of 16
    for total, data_loss, l1, l2 in values:
        assert total == pytest.approx(data_loss + 1e-5 * l1 + 1e-4 * l2, rel=1e-5)


@pytest.mark.slow  # trains the generated program for real
def test_early_stopping_stops_when_the_validation_loss_stalls(runs):
    assert runs.probe("early_stop.epochs_run") == 2
    assert "early stopping: val_loss has not improved for 1 epochs" in runs.stdout
    vals = runs.probes("seed_early_stop.val")
    assert 1 <= len(vals) <= 6 and runs.probe("seed_early_stop.best") == pytest.approx(min(vals))


@pytest.mark.slow  # trains the generated program for real
def test_adam_switched_to_adamw_keeps_the_weight_decay(runs):
    assert runs.probe("adamw.optimizer") == ["AdamW", 1e-4]
