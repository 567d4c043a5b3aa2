"""All the training-loop actions stacked on a loop that torch-lsp itself wrote (`loop.train` and
`loop.train_functions` on the no-loop fixture): each applies to the previous one's result, the
rules stay quiet, and the program trains as one process with every piece in effect."""

import pytest

from harness import Program, apply_action, assert_no_new_findings, fixture, run_batch, span_at

pytestmark = pytest.mark.slow  # trains generated programs

LOOP = "backward()\n"
STACK = ("precision.amp", "precision.accumulate", "checkpoint.save_resume", "distributed.ddp")


def stacked(generator: str) -> str:
    before = source = fixture("no_loop.py")
    source = apply_action(source, generator, span_at(source, "model = MLP"))
    for action in STACK:
        # Actions that belong to the epoch loop are offered there too; the cursor stays in the
        # batch loop, where all of them are offered.
        source = apply_action(source, action, span_at(source, LOOP))
    source = apply_action(source, "reproducibility.seed", span_at(source, "class MLP"))
    assert_no_new_findings(before, source)
    return source


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    loop, functions = stacked("loop.train"), stacked("loop.train_functions")
    assert "    rank, world_size, device = setup_distributed()\n" in functions
    return run_batch([Program("first", loop, folder="loop"), Program("again", loop, folder="loop"),
                      Program("functions", functions)], tmp_path_factory.mktemp("stack")).assert_ok()


def test_everything_on_a_generated_loop(runs):
    run = runs.probe("first.run")
    # 64 samples, 48 for training in batches of 16: 3 batches, one (accumulated) step per epoch;
    # loop.train wrote 10 epochs. Autocast computes in bfloat16 on the CPU.
    assert run["steps"] == 10 and run["linear_dtypes"] == ["torch.bfloat16"], run
    assert (runs.workdir / "loop" / "checkpoint.pt").exists()
    assert "continuing at epoch 11" in runs.stdout and runs.probe("again.run")["steps"] == 0


def test_everything_on_generated_training_functions(runs):
    run = runs.probe("functions.run")
    assert run["steps"] == 10 and "torch.bfloat16" in run["linear_dtypes"], run
    assert (runs.workdir / "functions" / "checkpoint.pt").exists()
