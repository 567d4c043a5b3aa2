"""Pretrained backbones: built with weights=None in tests (never downloaded), head fitted to the
file's classes, optional freezing that leaves only the head trainable."""

import pytest

from harness import (apply_action, assert_no_new_findings, fixture, inserted_text, instrumented, offered,
                     offline_weights, run_program, span_at, with_probe)
from torch_lsp.scaffold.pretrained import BACKBONES

pytestmark = pytest.mark.slow  # trains and builds every torchvision backbone


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One offline program: the seed trained with a frozen ResNet-18, then every architecture's
    generated function built with a 7-class head (all builders patched to weights=None)."""
    before = fixture("cifar10_seed.py")
    after = apply_action(before, "pretrained.resnet18", span_at(before, "net = Net"))
    assert_no_new_findings(before, after)
    frozen = after.replace("num_classes=10, freeze_backbone=False)", "num_classes=10, freeze_backbone=True)")
    assert frozen != after
    checks = ['probe("head", [type(net).__name__, net.fc.out_features])',
              'probe("trainable", sorted(n for n, p in net.named_parameters() if p.requires_grad))']
    vision = fixture("vision_main.py")
    for arch, backbone in BACKBONES.items():
        built = apply_action(vision, f"pretrained.{arch}", span_at(vision, "model = SmallCNN"))
        assert_no_new_findings(vision, built)
        function = built[built.index("def build_pretrained_model"):built.index("def main")]
        checks.append(f"_namespace = {{'torchvision': torchvision, 'nn': nn}}\nexec({function!r}, _namespace)\n"
                      f"model = _namespace['build_pretrained_model'](num_classes=7, freeze_backbone=True).eval()\n"
                      f"out = model(torch.zeros(2, 3, 64, 64))\n"
                      f"trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)\n"
                      f"head = {backbone.head}\n"
                      f"probe('{arch}', [list(out.shape), trainable == head.weight.numel() + head.bias.numel()])")
    program = with_probe(offline_weights(instrumented(frozen), *(b.builder for b in BACKBONES.values())),
                         "\n".join(checks))
    return run_program(program, tmp_path_factory.mktemp("pretrained")).assert_ok()


def test_seed_trains_a_frozen_resnet18_head(run):
    assert run.probes("weights_requested")[0] == "ResNet18_Weights.IMAGENET1K_V1"
    assert run.probe("head") == ["ResNet", 10]
    assert run.probe("trainable") == ["fc.bias", "fc.weight"]
    assert run.probe("run")["steps"] == 4  # 64 samples in the seed's batches of 32, 2 epochs


def test_every_backbone_builds_with_its_head_replaced(run):
    for arch in BACKBONES:
        assert run.probe(arch) == [[2, 7], True], arch
    assert len(run.probes("weights_requested")) == 1 + len(BACKBONES)


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
