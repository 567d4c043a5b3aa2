"""Training loop, train_one_epoch/evaluate variant and evaluation loop: offered where they make
sense, fitted to the file's names, and the programs they produce train and evaluate for real."""

import re

from harness import (apply_action, assert_no_new_findings, assert_preserved, fixture, inserted_text, offered,
                     run_program, span_at, with_probe)
from probe_points import insert_line, with_probe_function

NO_LOOP_TRAINING_LOOP = '''

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model.to(device)
num_epochs = 10

for epoch in range(num_epochs):
    model.train()
    running_loss = 0.0
    for inputs, labels in train_loader:
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    print(f"epoch {epoch + 1}/{num_epochs}: train loss {running_loss / len(train_loader):.4f}")
'''[1:]

# Independent accuracy and loss of a model over a loader, computed by the probe itself.
CHECK_EVALUATE = """
import torch as _torch
def _reference(model, loader, criterion):
    model.eval()
    total, correct, seen = 0.0, 0, 0
    with _torch.no_grad():
        for x, y in loader:
            out = model(x)
            total += criterion(out, y).item() * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
    model.train()
    return [total / seen, correct / seen]
"""


def test_training_loop_is_offered_on_the_model_class_and_variable_only_without_a_loop():
    source = fixture("no_loop.py")
    assert "loop.train" in offered(source, span_at(source, "class MLP"))
    assert "loop.train" in offered(source, span_at(source, "model = MLP"))
    assert "loop.train" in offered(source, span_at(source, "self.fc2(x)"))  # inside the class
    assert "loop.train" not in offered(source, span_at(source, "samples = int"))
    seed = fixture("cifar10_seed.py")  # already trains
    assert "loop.train" not in offered(seed, span_at(seed, "class Net"))
    assert "loop.train_functions" not in offered(seed, span_at(seed, "net = Net()"))


def test_training_loop_snapshot_and_it_trains(tmp_path):
    source = fixture("no_loop.py")
    result = apply_action(source, "loop.train", span_at(source, "class MLP"))
    assert inserted_text(source, result) == NO_LOOP_TRAINING_LOOP
    assert result.startswith(source)  # only appended: the rest is byte for byte
    assert_no_new_findings(source, result)
    run = run_program(with_probe(result, "probe('training', model.training)"), tmp_path).assert_ok()
    losses = [float(v) for v in re.findall(r"train loss ([0-9.]+)", run.stdout)]
    assert len(losses) == 10 and losses[-1] < losses[0]
    assert run.probe("training") is True


def test_training_loop_creates_what_is_missing(tmp_path):
    # Only a class and a loader: the action creates the model, device, loss and optimizer.
    source = fixture("no_loop.py").split("model = MLP()")[0]
    result = apply_action(source, "loop.train", span_at(source, "class MLP"))
    added = inserted_text(source, result)
    for line in ("model = MLP().to(device)", "criterion = nn.CrossEntropyLoss()",
                 "optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)"):
        assert line in added
    assert_no_new_findings(source, result)
    run = run_program(with_probe(result, "probe('optimizer', type(optimizer).__name__)"), tmp_path).assert_ok()
    assert run.probe("optimizer") == "SGD" and run.stdout.count("train loss") == 10


def test_training_functions_variant_trains_and_evaluates(tmp_path):
    source = fixture("no_loop.py")
    result = apply_action(source, "loop.train_functions", span_at(source, "model = MLP"))
    added = inserted_text(source, result)
    assert "def train_one_epoch(model, loader, criterion, optimizer, device):" in added
    assert "def evaluate(model, loader, criterion, device):" in added
    assert "val_loss, val_accuracy = evaluate(model, val_loader, criterion, device)" in added
    assert_no_new_findings(source, result)
    probe = CHECK_EVALUATE + """
probe('evaluate', list(evaluate(model, val_loader, criterion, device)))
probe('reference', _reference(model, val_loader, criterion))
probe('training', model.training)
"""
    run = run_program(with_probe(result, probe), tmp_path).assert_ok()
    assert run.probe("evaluate") == run.probe("reference")
    assert run.probe("training") is True
    assert len(re.findall(r"val accuracy [0-9.]+%", run.stdout)) == 10


def test_evaluation_loop_on_the_seed(tmp_path):
    source = fixture("cifar10_seed.py")
    assert "loop.evaluate" in offered(source, span_at(source, "loss.backward()"))
    assert "loop.evaluate" in offered(source, span_at(source, "net = Net()"))
    assert "loop.evaluate" not in offered(source, span_at(source, "import os"))
    result = apply_action(source, "loop.evaluate", span_at(source, "outputs = net(inputs)"))
    assert_preserved(source, result)
    assert_no_new_findings(source, result)
    added = inserted_text(source, result)
    assert "    with torch.no_grad():" in added and "    model.eval()" in added and "    model.train()" in added
    # Called at the end of each epoch with the file's own names (no validation loader: training data).
    assert "    val_loss, val_accuracy = evaluate(net, trainloader, criterion)\n" in added
    # The function goes before the comment that introduces the loop.
    assert result.index("def evaluate(") < result.index("# 训练模型")
    probe = CHECK_EVALUATE + """
probe('evaluate', list(evaluate(net, trainloader, criterion)))
probe('reference', _reference(net, trainloader, criterion))
probe('training', net.training)
"""
    # No shuffling in the probe's comparison: both passes must see the same batches.
    runnable = result.replace("batch_size=32, shuffle=True", "batch_size=32, shuffle=False")
    run = run_program(with_probe(runnable, probe), tmp_path).assert_ok()
    assert run.probe("evaluate") == run.probe("reference")
    assert run.probe("training") is True
    assert run.stdout.count("val accuracy") == 2  # EPOCHS=2


def test_evaluation_is_not_offered_when_the_loop_already_validates():
    source = fixture("with_loop.py")
    assert "loop.evaluate" not in offered(source, span_at(source, "loss.backward()"))


def test_evaluation_uses_a_validation_loader_and_device(tmp_path):
    # with_loop without its hand-written validation: evaluate() must use val_loader and device.
    source = fixture("with_loop.py").split("\n    model.eval()")[0] + "\n"
    result = apply_action(source, "loop.evaluate", span_at(source, "loss.backward()"))
    added = inserted_text(source, result)
    assert "def evaluate(model, loader, criterion, device):" in added
    assert "    val_loss, val_accuracy = evaluate(model, val_loader, loss_fn, device)" in added
    assert_no_new_findings(source, result)
    run_program(result, tmp_path).assert_ok()
