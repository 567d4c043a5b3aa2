"""All the training-loop actions stacked on a loop that torch-lsp itself wrote (`loop.train` on
the no-loop fixture): each applies to the previous one's result, the rules stay quiet, and the
program trains as one process with every piece in effect."""

from harness import apply_action, assert_no_new_findings, fixture, instrumented, run_program, span_at

LOOP = "backward()\n"


def test_everything_on_a_generated_loop(tmp_path):
    before = source = fixture("no_loop.py")
    source = apply_action(source, "loop.train", span_at(source, "model = MLP"))
    for action in ("precision.amp", "precision.accumulate", "checkpoint.save_resume", "distributed.ddp"):
        source = apply_action(source, action, span_at(source, LOOP))
    source = apply_action(source, "reproducibility.seed", span_at(source, "class MLP"))
    assert_no_new_findings(before, source)

    result = run_program(instrumented(source), tmp_path).assert_ok()
    run = result.probe("run")
    # 64 samples, 48 for training in batches of 16: 3 batches, one (accumulated) step per epoch;
    # loop.train wrote 10 epochs. Autocast computes in bfloat16 on the CPU.
    assert run["steps"] == 10 and run["linear_dtypes"] == ["torch.bfloat16"], run
    assert (tmp_path / "checkpoint.pt").exists() and result.stdout.count("train loss") == 10
    again = run_program(instrumented(source), tmp_path).assert_ok()
    assert "continuing at epoch 11" in again.stdout and again.probe("run")["steps"] == 0
