"""Training loop, train_one_epoch/evaluate variant and evaluation loop: offered where they make
sense, fitted to the file's names, and the programs they produce train and evaluate for real."""

import pytest

from harness import apply_action, assert_no_new_findings, assert_preserved, fixture, inserted_text, offered, span_at
from probe_points import insert_line, run_programs

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


def without_validation(source: str) -> str:
    """with_loop.py without its hand-written validation pass."""
    return source.split("\n    model.eval()")[0] + "\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every loop action applied and run, all programs in one interpreter."""
    programs = {}
    no_loop = fixture("no_loop.py")
    trained = apply_action(no_loop, "loop.train", span_at(no_loop, "class MLP"))
    programs["train"] = insert_line(trained, "print(f\"epoch {epoch + 1}/{num_epochs}: train loss",
                                    "probe('train_loss', running_loss / len(train_loader))") + \
        "probe('training', model.training)\n"

    bare = only_a_dataset()
    created = apply_action(bare, "loop.train", span_at(bare, "class MLP"))
    programs["created"] = insert_line(created, "running_loss += loss.item()", "probe('step', 1)") + \
        "probe('optimizer', type(optimizer).__name__)\n"

    functions = apply_action(no_loop, "loop.train_functions", span_at(no_loop, "model = MLP"))
    programs["functions"] = insert_line(functions, "val_loss, val_accuracy = evaluate(", "probe('val', val_accuracy)") + \
        CHECK_EVALUATE + (
        "probe('evaluate', list(evaluate(model, val_loader, criterion, device)))\n"
        "probe('reference', _reference(model, val_loader, criterion))\n"
        "probe('training', model.training)\n")

    seed = fixture("cifar10_seed.py")
    evaluated = apply_action(seed, "loop.evaluate", span_at(seed, "outputs = net(inputs)"))
    # No shuffling: the probe's independent pass must see the same batches as evaluate().
    evaluated = evaluated.replace("batch_size=32, shuffle=True", "batch_size=32, shuffle=False")
    programs["seed_evaluate"] = insert_line(evaluated, "val_loss, val_accuracy = evaluate(", "probe('val', val_accuracy)") + \
        CHECK_EVALUATE + (
        "probe('evaluate', list(evaluate(net, trainloader, criterion)))\n"
        "probe('reference', _reference(net, trainloader, criterion))\n"
        "probe('training', net.training)\n")

    bare_loop = without_validation(fixture("with_loop.py"))
    programs["device_evaluate"] = apply_action(bare_loop, "loop.evaluate", span_at(bare_loop, "loss.backward()")) + \
        "probe('val', [val_loss, val_accuracy])\n"
    programs["functions_composed"] = compose_on_functions() + (
        "probe('steps', [scheduler.last_epoch, num_epochs * len(train_loader)])\n")
    return run_programs(programs, tmp_path_factory.mktemp("loops"), timeout=240)


def compose_on_functions() -> str:
    """The train_one_epoch variant (model variable `net`), then clipping, L2 and OneCycleLR."""
    source = fixture("no_loop.py").replace("model = MLP()", "net = MLP()").replace("model.parameters()", "net.parameters()")
    source = apply_action(source, "loop.train_functions", span_at(source, "net = MLP"))
    for offer_id in ("reg.clip_grad", "reg.l2_penalty", "scheduler.one_cycle_lr"):
        before = source
        source = apply_action(source, offer_id, span_at(source, "loss.backward()"))
        assert_no_new_findings(before, source)
    return source


@pytest.mark.slow  # trains the generated program for real
def test_actions_inside_train_one_epoch_use_its_parameters(runs):
    result = compose_on_functions()
    body = result[result.index("def train_one_epoch"):result.index("def evaluate")]
    assert "        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n        optimizer.step()\n" \
           "        scheduler.step()  # OneCycleLR steps after every batch\n" in body
    assert "sum(p.pow(2).sum() for p in model.parameters())" in body
    # num_epochs is bound after the optimizer: the scheduler is built just before the epoch loop.
    assert "scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.01, epochs=num_epochs, " \
           "steps_per_epoch=len(train_loader))\nfor epoch in range(num_epochs):" in result
    steps, expected = runs.probe("functions_composed.steps")
    assert steps == expected


@pytest.mark.slow  # trains the generated program for real
def test_training_loop_snapshot_and_it_trains(runs):
    source = fixture("no_loop.py")
    result = apply_action(source, "loop.train", span_at(source, "class MLP"))
    assert inserted_text(source, result) == NO_LOOP_TRAINING_LOOP
    assert result.startswith(source)  # only appended: the rest is byte for byte
    assert_no_new_findings(source, result)
    losses = runs.probes("train.train_loss")
    assert len(losses) == 10 and losses[-1] < losses[0]
    assert runs.probe("train.training") is True


def only_a_dataset() -> str:
    """no_loop.py cut down to the model class and a dataset: no loader, model, loss or optimizer."""
    return fixture("no_loop.py").split("train_loader = DataLoader")[0] + "train_set = TensorDataset(features, targets)\n"


@pytest.mark.slow  # trains the generated program for real
def test_training_loop_creates_what_is_missing(runs):
    source = only_a_dataset()
    result = apply_action(source, "loop.train", span_at(source, "class MLP"))
    added = inserted_text(source, result)
    for line in ("train_loader = DataLoader(train_set, batch_size=32, shuffle=True)", "model = MLP().to(device)",
                 "criterion = nn.CrossEntropyLoss()",
                 "optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)"):
        assert line in added
    assert_no_new_findings(source, result)
    assert runs.probe("created.optimizer") == "SGD"
    assert len(runs.probes("created.step")) == 10 * 2  # 10 epochs, 64 samples in batches of 32


@pytest.mark.slow  # trains the generated program for real
def test_training_functions_variant_trains_and_evaluates(runs):
    source = fixture("no_loop.py")
    result = apply_action(source, "loop.train_functions", span_at(source, "model = MLP"))
    added = inserted_text(source, result)
    assert "def train_one_epoch(model, loader, criterion, optimizer, device):" in added
    assert "def evaluate(model, loader, criterion, device):" in added
    assert "val_loss, val_accuracy = evaluate(model, val_loader, criterion, device)" in added
    assert_no_new_findings(source, result)
    assert runs.probe("functions.evaluate") == runs.probe("functions.reference")
    assert runs.probe("functions.training") is True
    assert len(runs.probes("functions.val")) == 10


@pytest.mark.slow  # trains the generated program for real
def test_evaluation_loop_on_the_seed(runs):
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
    assert runs.probe("seed_evaluate.evaluate") == runs.probe("seed_evaluate.reference")
    assert runs.probe("seed_evaluate.training") is True
    assert len(runs.probes("seed_evaluate.val")) == 2  # EPOCHS=2


def test_evaluation_is_not_offered_when_the_loop_already_validates():
    source = fixture("with_loop.py")
    assert "loop.evaluate" not in offered(source, span_at(source, "loss.backward()"))


@pytest.mark.slow  # trains the generated program for real
def test_evaluation_uses_a_validation_loader_and_device(runs):
    source = without_validation(fixture("with_loop.py"))
    result = apply_action(source, "loop.evaluate", span_at(source, "loss.backward()"))
    added = inserted_text(source, result)
    assert "def evaluate(model, loader, criterion, device):" in added
    assert "    val_loss, val_accuracy = evaluate(model, val_loader, loss_fn, device)" in added
    assert_no_new_findings(source, result)
    val_loss, val_accuracy = runs.probe("device_evaluate.val")
    assert val_loss > 0 and 0 <= val_accuracy <= 1


def test_evaluation_with_a_functional_loss():
    from test_regularisers import AMP_LOOP

    result = apply_action(AMP_LOOP, "loop.evaluate", span_at(AMP_LOOP, "scaler.step"))
    assert "    val_loss, val_accuracy = evaluate(model, data, nn.functional.cross_entropy)\n" in result
    assert_no_new_findings(AMP_LOOP, result)
