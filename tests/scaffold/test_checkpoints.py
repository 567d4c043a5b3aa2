"""Checkpoint save/resume: a second run resumes with the model, optimizer and scheduler restored."""

from harness import (apply_action, assert_no_new_findings, fixture, inserted_text, instrumented, offered,
                     run_program, span_at, with_probe)


def with_checkpoints(name: str, *first: str) -> tuple[str, str]:
    before = source = fixture(name)
    for action in (*first, "checkpoint.save_resume"):
        source = apply_action(source, action, span_at(source, "backward()"))
    assert_no_new_findings(before, source)
    return before, source


def test_resume_restores_model_optimizer_scheduler_and_epoch(tmp_path):
    _, source = with_checkpoints("loop_tensor.py", "precision.amp")
    program = instrumented(source)
    first = run_program(program, tmp_path).assert_ok().probe("run")
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "checkpoint.pt.tmp").exists()

    second_run = run_program(program, tmp_path, env={"EPOCHS": "3"}).assert_ok()
    second = second_run.probe("run")
    assert "resumed from checkpoint.pt: continuing at epoch 3" in second_run.stdout
    # The weights loaded are exactly those the first run ended with; Adam's state came back.
    assert second["loaded_checksums"] == [first["checksum"]]
    assert second["optimizer_states_loaded"] == [2 * 2]  # exp_avg etc. for 2 Linear layers' 4 tensors
    # Only the third epoch ran (64 samples / 16 = 4 steps), at StepLR's restored lr: 1e-3 halved
    # after epoch 2. A scheduler that had not been restored would still be at 1e-3.
    assert second["steps"] == 4 and second["lrs"] == [5e-4] * 4, second


def test_checkpoint_loads_with_weights_only_on_the_seed(tmp_path):
    before, source = with_checkpoints("cifar10_seed.py")
    probe = """
        import torch as _t
        _saved = _t.load("checkpoint.pt", weights_only=True)
        probe("saved", sorted(_saved))
        probe("epoch", _saved["epoch"])
    """
    result = run_program(with_probe(source, probe), tmp_path).assert_ok()
    assert result.probe("saved") == ["epoch", "model", "optimizer"] and result.probe("epoch") == 1
    assert "map_location=\"cpu\", weights_only=True" in inserted_text(before, source)


def test_checkpoints_inside_main_with_evaluation(tmp_path):
    _, source = with_checkpoints("vision_main.py")
    assert "    for epoch in range(start_epoch, epochs):\n" in source
    run_program(source, tmp_path, env={"EPOCHS": "1"}).assert_ok()
    again = run_program(source, tmp_path, env={"EPOCHS": "1"}).assert_ok()
    assert "continuing at epoch 2" in again.stdout and "epoch 1:" not in again.stdout


def test_not_offered_without_an_epoch_loop_or_when_saving_already():
    no_loop = fixture("no_loop.py")
    assert "checkpoint.save_resume" not in offered(no_loop, span_at(no_loop, "model = MLP"))
    saves = fixture("loop_tensor.py") + '\ntorch.save(model.state_dict(), "model.pt")\n'
    assert "checkpoint.save_resume" not in offered(saves, span_at(saves, "backward()"))
    batches_only = fixture("missing_zero_grad.py").replace("for epoch in range(3):\n    for", "if True:\n    for")
    assert "checkpoint.save_resume" not in offered(batches_only, span_at(batches_only, "backward()"))
