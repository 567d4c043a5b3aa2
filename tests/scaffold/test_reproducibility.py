"""Reproducibility: two runs of the seeded program in one interpreter end with identical weights."""

import pytest
from harness import apply_action, assert_no_new_findings, fixture, offered, run_program, span_at

# Runs each program twice in one interpreter (runpy), so the random state simply carries on
# between runs: without seeding, the two runs start from different weights and data orders. The
# unseeded program goes first: the seeded one turns deterministic algorithms on for good.
TWICE = """
import runpy, json, torch
def final_weights(path):
    namespace = runpy.run_path(path, run_name="__main__")
    return float(sum(p.detach().double().sum() for p in namespace["MODEL"].parameters()))
for label in ("unseeded", "seeded"):
    first, second = final_weights(label + ".py"), final_weights(label + ".py")
    print("PROBE " + label + ".same " + json.dumps(first == second))
    print("PROBE " + label + ".deterministic " + json.dumps(torch.are_deterministic_algorithms_enabled()))
"""


@pytest.mark.slow  # trains the generated program for real
def test_two_runs_match_only_when_seeded(tmp_path):
    before = fixture("loop_tensor.py")
    after = apply_action(before, "reproducibility.seed", span_at(before, "model = Classifier"))
    assert_no_new_findings(before, after)
    for label, source in (("unseeded", before), ("seeded", after)):
        (tmp_path / f"{label}.py").write_text(source.replace("model = Classifier", "model = MODEL = Classifier"))
    result = run_program(TWICE, tmp_path, env={"EPOCHS": "1"}).assert_ok()
    assert result.probe("unseeded.same") is False and result.probe("unseeded.deterministic") is False
    assert result.probe("seeded.same") is True and result.probe("seeded.deterministic") is True


def test_seed_reuses_the_files_manual_seed_and_goes_below_the_imports():
    before = fixture("cifar10_seed.py")
    after = apply_action(before, "reproducibility.seed", span_at(before, "class Net"))
    assert "from torchvision.datasets import FakeData\nimport random\n\n\ndef seed_everything(" in after
    assert "SEED = 0\nseed_everything(SEED)\n" in after
    assert after.index("seed_everything(SEED)") < after.index("class Net")


def test_numpy_is_seeded_when_the_file_uses_it():
    before = "import numpy as np\n" + fixture("no_loop.py")
    after = apply_action(before, "reproducibility.seed", span_at(before, "model = MLP"))
    assert "    np.random.seed(seed)\n" in after


def test_not_offered_twice_or_without_training_code():
    assert "reproducibility.seed" not in offered("import torch\nx = torch.ones(3)\n", span_at("import torch\n", "torch"))
    done = "import torch\ntorch.use_deterministic_algorithms(True)\n" + fixture("no_loop.py")
    assert "reproducibility.seed" not in offered(done, span_at(done, "model = MLP"))
