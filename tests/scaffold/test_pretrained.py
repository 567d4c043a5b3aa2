"""Pretrained backbones: built with weights=None in tests (never downloaded), head fitted to the
file's classes, optional freezing that leaves only the head trainable."""

import pytest

from harness import (apply_action, assert_no_new_findings, fixture, inserted_text, instrumented, offered,
                     offline_weights, run_program, span_at, with_probe)
from torch_lsp.scaffold.pretrained import BACKBONES


def test_seed_trains_a_frozen_resnet18_head(tmp_path):
    before = fixture("cifar10_seed.py")
    after = apply_action(before, "pretrained.resnet18", span_at(before, "net = Net"))
    assert_no_new_findings(before, after)
    frozen = after.replace("num_classes=10, freeze_backbone=False)", "num_classes=10, freeze_backbone=True)")
    assert frozen != after
    program = with_probe(offline_weights(instrumented(frozen), "resnet18"), """
        probe("head", [type(net).__name__, net.fc.out_features])
        probe("trainable", sorted(n for n, p in net.named_parameters() if p.requires_grad))
    """)
    result = run_program(program, tmp_path).assert_ok()
    assert result.probe("weights_requested") == "ResNet18_Weights.IMAGENET1K_V1"
    assert result.probe("head") == ["ResNet", 10]
    assert result.probe("trainable") == ["fc.bias", "fc.weight"]
    assert result.probe("run")["steps"] == 4  # 64 samples in the seed's batches of 32, 2 epochs


def test_every_backbone_builds_with_its_head_replaced(tmp_path):
    """All architectures' generated functions, executed offline in one process."""
    before = fixture("vision_main.py")
    checks = []
    for arch in BACKBONES:
        after = apply_action(before, f"pretrained.{arch}", span_at(before, "model = SmallCNN"))
        assert_no_new_findings(before, after)
        function = after[after.index("def build_pretrained_model"):after.index("def main")]
        checks.append(f"namespace = {{'torchvision': torchvision, 'nn': nn}}\nexec({function!r}, namespace)\n"
                      f"model = namespace['build_pretrained_model'](num_classes=7, freeze_backbone=True).eval()\n"
                      f"out = model(torch.zeros(2, 3, 64, 64))\n"
                      f"trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)\n"
                      f"head = {BACKBONES[arch].head}\n"
                      f"probe('{arch}', [list(out.shape), trainable == head.weight.numel() + head.bias.numel()])\n")
    program = "import torch, torchvision, torchvision.models\nfrom torch import nn\n"
    result = run_program(with_probe(offline_weights(program, *(b.builder for b in BACKBONES.values())),
                                    "\n".join(checks)), tmp_path).assert_ok()
    for arch in BACKBONES:
        assert result.probe(arch) == [[2, 7], True], arch
    assert len(result.probes("weights_requested")) == len(BACKBONES)


def test_main_style_file_gets_the_function_at_module_level_and_its_own_names():
    before = fixture("vision_main.py")
    after = apply_action(before, "pretrained.mobilenet_v3_small", span_at(before, "class SmallCNN"))
    added = inserted_text(before, after)
    assert "    model = build_pretrained_model(num_classes=NUM_CLASSES, freeze_backbone=False).to(device)\n" in added
    assert "downloads about 10 MB on first use" in added
    assert "\ndef build_pretrained_model(" in after and after.index("def build_pretrained_model") < after.index("def main")


@pytest.mark.parametrize("name, cursor", [("loop_tensor.py", "model = Classifier"), ("no_loop.py", "model = MLP"),
                                          ("cifar10_seed.py", "optimizer = optim")])
def test_not_offered_off_images_or_off_the_model(name, cursor):
    source = fixture(name)
    assert not [o for o in offered(source, span_at(source, cursor)) if o.startswith("pretrained.")]
