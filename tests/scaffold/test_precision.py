"""Mixed precision and gradient accumulation: applied to the fixtures, then trained for real."""

import pytest

from harness import Program, apply_action, assert_no_new_findings, fixture, inserted_text, offered, run_batch, span_at

FIXTURES = ["cifar10_seed.py", "loop_tensor.py", "vision_main.py"]


def applied(name: str, *actions: str) -> tuple[str, str]:
    before = source = fixture(name)
    for action in actions:
        source = apply_action(source, action, span_at(source, "backward()"))
    assert_no_new_findings(before, source)
    return before, source


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every program these tests train, in one interpreter."""
    programs = [Program(f"amp_{name[:-3]}", applied(name, "precision.amp")[1]) for name in FIXTURES]
    programs.append(Program("accumulate", applied("loop_tensor.py", "precision.accumulate")[1], {"SAMPLES": "96"}))
    programs.append(Program("amp_accumulate", applied("vision_main.py", "precision.amp", "precision.accumulate")[1]))
    return run_batch(programs, tmp_path_factory.mktemp("precision")).assert_ok()


@pytest.mark.slow  # trains the generated program for real
@pytest.mark.parametrize("name", FIXTURES)
def test_amp_trains_under_autocast(name, runs):
    run = runs.probe(f"amp_{name[:-3]}.run")
    # On the CPU autocast computes the Linear layers in bfloat16; the scaler passes steps through.
    assert "torch.bfloat16" in run["linear_dtypes"], run
    assert run["steps"] > 0


@pytest.mark.slow  # trains the generated program for real
def test_accumulation_steps_every_n_batches_and_on_the_last(runs):
    # 96 samples in batches of 16: 6 batches per epoch; with 4 accumulated, steps after batch 4
    # and after the last batch (6): 2 per epoch instead of 6.
    assert runs.probe("accumulate.run")["steps"] == 4


@pytest.mark.slow  # trains the generated program for real
def test_accumulation_and_amp_compose_in_either_order(runs):
    _, amp_first = applied("vision_main.py", "precision.amp", "precision.accumulate")
    _, accumulate_first = applied("vision_main.py", "precision.accumulate", "precision.amp")
    assert "scaler.scale(loss / accumulation_steps).backward()" in amp_first
    assert "scaler.scale(loss / accumulation_steps).backward()" in accumulate_first
    # 64 samples in batches of 16: 4 batches, one step per epoch, 2 epochs.
    run = runs.probe("amp_accumulate.run")
    assert run["steps"] == 2 and "torch.bfloat16" in run["linear_dtypes"], run


def test_amp_snapshot_on_the_seed():
    before, after = applied("cifar10_seed.py", "precision.amp")
    assert inserted_text(before, after) == '''\
# Mixed precision: float16 with loss scaling on CUDA; bfloat16 elsewhere, which needs no scaling
# (the scaler is then disabled and passes calls through), so this runs on any device.
amp_device_type = "cpu"
amp_dtype = torch.float16 if amp_device_type == "cuda" else torch.bfloat16
scaler = torch.amp.GradScaler(amp_device_type, enabled=amp_dtype == torch.float16)

        with torch.autocast(device_type=amp_device_type, dtype=amp_dtype):
            outputs = net(inputs)
            loss = criterion(outputs, labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
'''


def test_accumulation_snapshot_moves_zero_grad_after_the_step():
    before, after = applied("cifar10_seed.py", "precision.accumulate")
    loop = after[after.index("for i, data"):]
    assert loop.splitlines()[1:9] == [
        "        inputs, labels = data",
        "        outputs = net(inputs)",
        "        loss = criterion(outputs, labels)",
        "        (loss / accumulation_steps).backward()",
        "        if (i + 1) % accumulation_steps == 0 or i + 1 == len(trainloader):",
        "            optimizer.step()",
        "            optimizer.zero_grad()",
        "        running_loss += loss.item()",
    ]


def test_amp_unscales_before_clipping():
    source = fixture("loop_tensor.py").replace(
        "        loss.backward()\n",
        "        loss.backward()\n        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n")
    after = apply_action(source, "precision.amp", span_at(source, "backward()"))
    assert ("        scaler.scale(loss).backward()\n"
            "        scaler.unscale_(optimizer)\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n"
            "        scaler.step(optimizer)\n"
            "        scaler.update()\n") in after


def test_not_offered_without_a_loop_or_away_from_it():
    no_loop = fixture("no_loop.py")
    assert not {"precision.amp", "precision.accumulate"} & set(offered(no_loop, span_at(no_loop, "optimizer =")))
    seed = fixture("cifar10_seed.py")
    assert not {"precision.amp", "precision.accumulate"} & set(offered(seed, span_at(seed, "class Net")))
    assert {"precision.amp", "precision.accumulate"} <= set(offered(seed, span_at(seed, "optimizer = optim")))


def test_existing_autocast_is_respected():
    _, source = applied("loop_tensor.py", "precision.amp")
    assert "precision.amp" not in offered(source, span_at(source, "backward()"))
