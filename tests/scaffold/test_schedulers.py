"""LR schedulers: built after the optimizer, stepped in the right place, and the learning rate
the program actually uses follows the schedule (checked against closed-form values)."""

import math

import pytest

from harness import (apply_action, assert_no_new_findings, assert_preserved, fixture, inserted_text, offered,
                     span_at)
from probe_points import insert_line, run_programs

SCHEDULERS = ["scheduler.step_lr", "scheduler.multistep_lr", "scheduler.exponential_lr", "scheduler.cosine_lr",
              "scheduler.one_cycle_lr", "scheduler.reduce_on_plateau", "scheduler.warmup_cosine"]
# fixture -> (optimizer line, the training loop's loss line, optimizer variable, initial lr)
FIXTURES = {
    "cifar10_seed.py": ("optimizer = optim.SGD", "loss.backward()", "optimizer", 0.001),
    "with_loop.py": ("optimizer = torch.optim.SGD", "loss.backward()", "optimizer", 0.1),
}
EPOCHS = 6

SEED_STEP_LR = '''
num_epochs = int(os.environ.get("EPOCHS", 10))
scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=max(1, num_epochs // 3), gamma=0.1)
for epoch in range(num_epochs):
    scheduler.step()  # once per epoch, after the optimizer steps
'''[1:]


def closed_form(offer_id: str, lr0: float, n: int) -> list[float]:
    """The learning rate after each epoch's scheduler.step(), for n epochs (the defaults the
    action writes: step every n//3 epochs, milestones at n/2 and 3n/4, gamma 0.95, ...)."""
    epochs = range(1, n + 1)
    if offer_id == "scheduler.step_lr":
        return [lr0 * 0.1 ** (e // max(1, n // 3)) for e in epochs]
    if offer_id == "scheduler.multistep_lr":
        return [lr0 * 0.1 ** sum(e >= m for m in {n // 2, n * 3 // 4}) for e in epochs]
    if offer_id == "scheduler.exponential_lr":
        return [lr0 * 0.95 ** e for e in epochs]
    if offer_id == "scheduler.cosine_lr":
        return [lr0 * (1 + math.cos(math.pi * e / n)) / 2 for e in epochs]
    if offer_id == "scheduler.warmup_cosine":  # 1 warmup epoch, then cosine over the other n - 1
        return [lr0 * (1 + math.cos(math.pi * (e - 1) / (n - 1))) / 2 for e in epochs]
    raise KeyError(offer_id)


def apply_at_optimizer(fixture_name: str, offer_id: str) -> tuple[str, str]:
    source = fixture(fixture_name)
    result = apply_action(source, offer_id, span_at(source, FIXTURES[fixture_name][0]))
    assert_preserved(source, result)
    assert_no_new_findings(source, result)
    return source, result


@pytest.mark.parametrize("fixture_name", FIXTURES)
def test_every_scheduler_is_offered_on_the_optimizer_and_in_the_loop_and_applies(fixture_name):
    source = fixture(fixture_name)
    optimizer_line, loop_line, _, _ = FIXTURES[fixture_name]
    assert set(SCHEDULERS) <= set(offered(source, span_at(source, optimizer_line)))
    assert set(SCHEDULERS) <= set(offered(source, span_at(source, loop_line)))
    assert not set(SCHEDULERS) & set(offered(source, span_at(source, "import os")))
    for offer_id in SCHEDULERS:
        _, result = apply_at_optimizer(fixture_name, offer_id)
        # Once a scheduler exists no other one is offered anywhere.
        for line in (optimizer_line, loop_line):
            assert not set(SCHEDULERS) & set(offered(result, span_at(result, line)))


def test_schedulers_need_a_training_loop():
    source = fixture("no_loop.py")
    assert not set(SCHEDULERS) & set(offered(source, span_at(source, "optimizer = torch.optim.Adam")))


def test_step_lr_snapshot_hoists_the_epoch_count():
    source, result = apply_at_optimizer("cifar10_seed.py", "scheduler.step_lr")
    assert inserted_text(source, result) == SEED_STEP_LR
    # The loop header now uses the hoisted variable; nothing else changed.
    assert "for epoch in range(num_epochs):" in result
    assert result.replace("num_epochs = int(os.environ.get(\"EPOCHS\", 10))\n", "").count("os.environ.get(\"EPOCHS\"") == 0


def test_one_cycle_steps_after_the_optimizer_in_the_batch_loop():
    source, result = apply_at_optimizer("with_loop.py", "scheduler.one_cycle_lr")
    lines = result.splitlines()
    step = next(i for i, line in enumerate(lines) if line.strip() == "optimizer.step()")
    assert lines[step + 1] == "        scheduler.step()  # OneCycleLR steps after every batch"
    assert "OneCycleLR(optimizer, max_lr=1.0, epochs=EPOCHS, steps_per_epoch=len(train_loader))" in result


PER_EPOCH_RUNS = [("cifar10_seed.py", "scheduler.step_lr"), ("with_loop.py", "scheduler.multistep_lr"),
                  ("with_loop.py", "scheduler.exponential_lr"), ("cifar10_seed.py", "scheduler.cosine_lr"),
                  ("cifar10_seed.py", "scheduler.warmup_cosine")]
PLATEAU_RUNS = [("cifar10_seed.py", "scheduler.reduce_on_plateau"), ("with_loop.py", "scheduler.reduce_on_plateau")]


def label(fixture_name: str, offer_id: str) -> str:
    return f"{fixture_name[:-3]}-{offer_id.split('.')[1]}"


@pytest.fixture(scope="module")
def schedule_runs(tmp_path_factory):
    """Every scheduler applied to a fixture and run for EPOCHS epochs, all in one interpreter."""
    programs = {}
    for fixture_name, offer_id in PER_EPOCH_RUNS:
        _, result = apply_at_optimizer(fixture_name, offer_id)
        optimizer = FIXTURES[fixture_name][2]
        probed = insert_line(result, "scheduler.step()", f"probe('lr', {optimizer}.param_groups[0]['lr'])")
        programs[label(fixture_name, offer_id)] = insert_line(
            probed, "for epoch in range", f"probe('lr_at_start', {optimizer}.param_groups[0]['lr'])", deeper=True)
    for fixture_name, offer_id in PLATEAU_RUNS:
        _, result = apply_at_optimizer(fixture_name, offer_id)
        programs[label(fixture_name, offer_id)] = insert_line(result, "scheduler.step(val_loss)",
                                                              "probe('plateau', [val_loss, scheduler.best])")
    _, result = apply_at_optimizer("cifar10_seed.py", "scheduler.one_cycle_lr")
    programs["one_cycle"] = insert_line(result, "scheduler.step()", "probe('lr', optimizer.param_groups[0]['lr'])") + (
        "probe('steps', scheduler.last_epoch)\nprobe('batches', len(trainloader))\n")
    # 256 samples: 8 batches per epoch, so OneCycleLR's warmup spans several steps.
    return run_programs(programs, tmp_path_factory.mktemp("schedules"), env={"EPOCHS": str(EPOCHS), "SAMPLES": "256"},
                        timeout=240)


@pytest.mark.slow  # trains the generated program for real
@pytest.mark.parametrize("fixture_name, offer_id", PER_EPOCH_RUNS)
def test_per_epoch_schedule_changes_the_learning_rate_on_schedule(fixture_name, offer_id, schedule_runs):
    lr0, name = FIXTURES[fixture_name][3], label(fixture_name, offer_id)
    assert schedule_runs.probes(f"{name}.lr") == pytest.approx(closed_form(offer_id, lr0, EPOCHS), rel=1e-6)
    first = schedule_runs.probes(f"{name}.lr_at_start")[0]
    assert first == pytest.approx(lr0 * 0.1 if offer_id == "scheduler.warmup_cosine" else lr0)


@pytest.mark.slow  # trains the generated program for real
def test_one_cycle_runs_every_batch_and_peaks_at_max_lr(schedule_runs):
    # OneCycleLR raises if stepped more often than epochs * steps_per_epoch: a clean run proves the count.
    lrs, max_lr = schedule_runs.probes("one_cycle.lr"), 0.01
    assert schedule_runs.probe("one_cycle.steps") == len(lrs) == EPOCHS * schedule_runs.probe("one_cycle.batches")
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) - 1 and 0.9 * max_lr < max(lrs) <= max_lr * (1 + 1e-9)
    assert lrs[-1] < max_lr / 25


@pytest.mark.slow  # trains the generated program for real
@pytest.mark.parametrize("fixture_name, offer_id", PLATEAU_RUNS)
def test_reduce_on_plateau_is_stepped_with_the_validation_loss(fixture_name, offer_id, schedule_runs):
    source, result = apply_at_optimizer(fixture_name, offer_id)
    assert "scheduler.step(val_loss)" in result
    if fixture_name == "cifar10_seed.py":  # no validation yet: evaluate() is written too
        assert "def evaluate(model, loader, criterion):" in inserted_text(source, result)
    seen = schedule_runs.probes(f"{label(fixture_name, offer_id)}.plateau")
    assert len(seen) == EPOCHS
    for index, (_, best) in enumerate(seen):
        assert best == pytest.approx(min(v for v, _ in seen[: index + 1]))


def test_one_cycle_counts_the_batches_of_a_plain_iterable_under_a_grad_scaler():
    from test_regularisers import AMP_LOOP

    result = apply_action(AMP_LOOP, "scheduler.one_cycle_lr", span_at(AMP_LOOP, "scaler.step"))
    assert "OneCycleLR(optimizer, max_lr=1.0, epochs=2, steps_per_epoch=len(data))\n" in result
    assert "        scaler.step(optimizer)\n        scaler.update()\n        scheduler.step()  # OneCycleLR steps after every batch\n" \
        in result
    assert_no_new_findings(AMP_LOOP, result)
