"""Checkpoint save/resume: a second run resumes with the model, optimizer and scheduler restored."""

import pytest

from harness import (Program, apply_action, assert_no_new_findings, fixture, inserted_text, offered, run_batch,
                     span_at, with_probe)


def with_checkpoints(name: str, *first: str) -> tuple[str, str]:
    before = source = fixture(name)
    for action in (*first, "checkpoint.save_resume"):
        source = apply_action(source, action, span_at(source, "backward()"))
    assert_no_new_findings(before, source)
    return before, source


SAVED = """
    import torch as _t
    _saved = _t.load("checkpoint.pt", weights_only=True)
    probe("saved", sorted(_saved))
    probe("epoch", _saved["epoch"])
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every program these tests train, in one interpreter; runs that share a folder resume."""
    _, tensor = with_checkpoints("loop_tensor.py", "precision.amp")
    _, seed = with_checkpoints("cifar10_seed.py")
    _, main = with_checkpoints("vision_main.py")
    return run_batch([
        Program("first", tensor, folder="tensor"),
        Program("second", tensor, {"EPOCHS": "3"}, folder="tensor"),
        Program("seed", with_probe(seed, SAVED)),
        Program("main_first", main, {"EPOCHS": "1"}, folder="main"),
        Program("main_second", main, {"EPOCHS": "1"}, folder="main"),
    ], tmp_path_factory.mktemp("checkpoints")).assert_ok()


@pytest.mark.slow  # trains the generated program for real
def test_resume_restores_model_optimizer_scheduler_and_epoch(runs):
    first, second = runs.probe("first.run"), runs.probe("second.run")
    assert not (runs.workdir / "tensor" / "checkpoint.pt.tmp").exists()
    assert "resumed from checkpoint.pt: continuing at epoch 3" in runs.stdout
    # The weights loaded are exactly those the first run ended with; Adam's state came back
    # (a state entry for each of the 4 parameter tensors).
    assert second["loaded_checksums"] == [first["checksum"]]
    assert second["optimizer_states_loaded"] == [4]
    # Only the third epoch ran (64 samples / 16 = 4 steps), at StepLR's restored lr: 1e-3 halved
    # after epoch 2. A scheduler that had not been restored would still be at 1e-3.
    assert second["steps"] == 4 and second["lrs"] == [5e-4] * 4, second


@pytest.mark.slow  # trains the generated program for real
def test_checkpoint_loads_with_weights_only_on_the_seed(runs):
    assert runs.probe("seed.saved") == ["epoch", "model", "optimizer"] and runs.probe("seed.epoch") == 1
    before, source = with_checkpoints("cifar10_seed.py")
    assert "map_location=\"cpu\", weights_only=True" in inserted_text(before, source)


@pytest.mark.slow  # trains the generated program for real
def test_checkpoints_inside_main_with_evaluation(runs):
    _, source = with_checkpoints("vision_main.py")
    assert "    for epoch in range(start_epoch, epochs):\n" in source
    assert runs.probe("main_first.run")["steps"] == 4
    assert "continuing at epoch 2" in runs.stdout and runs.probe("main_second.run")["steps"] == 0
    assert runs.probe("main_second.run")["loaded_checksums"] == [runs.probe("main_first.run")["checksum"]]


def test_not_offered_without_an_epoch_loop_or_when_saving_already():
    no_loop = fixture("no_loop.py")
    assert "checkpoint.save_resume" not in offered(no_loop, span_at(no_loop, "model = MLP"))
    saves = fixture("loop_tensor.py") + '\ntorch.save(model.state_dict(), "model.pt")\n'
    assert "checkpoint.save_resume" not in offered(saves, span_at(saves, "backward()"))
    batches_only = fixture("missing_zero_grad.py").replace("for epoch in range(3):\n    for", "if True:\n    for")
    assert "checkpoint.save_resume" not in offered(batches_only, span_at(batches_only, "backward()"))
