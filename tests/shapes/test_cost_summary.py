"""The model summary from the module-call tree: rows per module instance call, totals equal to
torchinfo's, mult-adds against torchinfo's estimate (the relation in docs/shapes.md)."""

from __future__ import annotations

import pytest

from tests.conftest import FIXTURES
from tests.shapes.cost_helpers import run_observed
from torch_lsp.shapes.summary import model_summary

torchinfo = pytest.importorskip("torchinfo")

TORCHVISION = ["resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0", "vit_b_16"]


def _torchvision_summary(name: str, batch: int = 2, depth: int = 3):
    source = (f"import torch, torchvision\nmodel = torchvision.models.{name}()\n"
              f"out = model(torch.randn({batch}, 3, 224, 224))\n")
    report, _ = run_observed(source)
    return model_summary(report, source.splitlines(), depth=depth)


def _torchinfo(model, size):
    import torch

    return torchinfo.summary(model, input_size=size, device="meta", verbose=0,
                             col_names=("input_size", "output_size", "num_params", "mult_adds"))


def _leaf_layers(stats):
    return [layer for layer in stats.summary_list if layer.is_leaf_layer and not layer.is_recursive]


def torchinfo_extra_mult_adds(layer) -> int:
    """What torchinfo's parameter-based estimate counts that a FLOP count of the layer's matmul /
    convolution does not: bias additions, and normalisation layers' affine parameters."""
    if "Conv" in layer.class_name:
        bias = getattr(layer.module, "bias", None)
        positions = layer.output_size[0] * _product(layer.output_size[2:])
        return bias.numel() * positions if bias is not None else 0
    if layer.class_name == "Linear" and len(layer.output_size) == 2:
        bias = layer.module.bias
        return layer.output_size[0] * bias.numel() if bias is not None else 0
    if "Norm" in layer.class_name:
        return layer.output_size[0] * layer.num_params
    return 0


def _product(values) -> int:
    out = 1
    for value in values:
        out *= value
    return out


@pytest.mark.parametrize("name", TORCHVISION)
def test_totals_equal_torchinfo(name):
    import torch
    import torchvision

    summary = _torchvision_summary(name)
    with torch.device("meta"):
        reference = _torchinfo(getattr(torchvision.models, name)(), (2, 3, 224, 224))
    totals = summary["totals"]
    assert totals["params"] == reference.total_params
    assert totals["trainable"] == reference.trainable_params
    assert totals["non_trainable"] == reference.total_params - reference.trainable_params
    if name == "vit_b_16":
        # torchinfo counts a Linear on [B, 197, 768] as B x parameters (the 197 tokens are not
        # counted) and does not see attention's matmuls: ours is the FLOP count, ~100x more.
        assert totals["mult_adds"] > 50 * reference.total_mult_adds
        return
    extra = sum(torchinfo_extra_mult_adds(layer) for layer in _leaf_layers(reference))
    assert totals["mult_adds"] + extra == reference.total_mult_adds
    assert abs(totals["mult_adds"] - reference.total_mult_adds) / reference.total_mult_adds < 0.001


def test_mult_adds_per_layer_follow_the_documented_relation():
    """resnet18, layer by layer: torchinfo = FLOPs / 2 + bias and norm terms, exactly."""
    import torch
    import torchvision

    summary = _torchvision_summary("resnet18", depth=10)
    with torch.device("meta"):
        reference = _torchinfo(torchvision.models.resnet18(), (2, 3, 224, 224))
    ours: dict[str, dict] = {}
    for row in summary["rows"]:
        ours.setdefault(row["name"], row)  # the first call of each layer (ReLUs are called twice)
    checked = 0
    for layer in _leaf_layers(reference):
        name = _path(layer)
        assert name in ours, name
        assert ours[name]["mult_adds"] + torchinfo_extra_mult_adds(layer) == layer.macs, name
        assert ours[name]["params"] == layer.num_params, name
        checked += 1
    assert checked == 52  # every leaf layer: 20 convs, 20 norms, 9 ReLUs, 2 pools, fc


def _path(layer) -> str:
    parts = []
    while layer is not None and layer.parent_info is not None:
        parts.append(layer.var_name)
        layer = layer.parent_info
    return ".".join(reversed(parts))


def test_resnet18_shows_its_layers_nested_to_the_depth():
    deep = _torchvision_summary("resnet18", depth=3)
    names = [row["name"] for row in deep["rows"]]
    assert names[:6] == ["", "conv1", "bn1", "relu", "maxpool", "layer1"]
    assert "layer1.0.conv1" in names and "layer4.1.bn2" in names
    assert max(row["depth"] for row in deep["rows"]) == 3
    assert deep["rows"][1]["input"] == ["[2, 3, 224, 224]"] and deep["rows"][1]["output"] == "[2, 64, 112, 112]"
    shallow = _torchvision_summary("resnet18", depth=1)
    assert [row["name"] for row in shallow["rows"]] == [
        "", "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    # A row shown without its children counts them: the column adds up to the total.
    assert sum(row["params"] or 0 for row in shallow["rows"]) == shallow["totals"]["params"] == 11_689_512
    assert sum(row["params"] or 0 for row in deep["rows"]) == 11_689_512
    assert "| └─ conv1: Conv2d(3, 64, kernel_size=(7, 7)" in deep["markdown"]
    assert "Total params: 11,689,512" in deep["markdown"]


def test_seed_lenet_matches_torchinfo_and_cpu():
    import torch

    source = (FIXTURES / "cifar10_seed.py").read_text()
    report, _ = run_observed(source, str(FIXTURES / "cifar10_seed.py"))
    summary = model_summary(report, source.splitlines(), file=str(FIXTURES / "cifar10_seed.py"))
    namespace: dict = {"__name__": "seed"}  # definitions only: not the training loop
    exec(compile(source.split("transform = ")[0], "seed", "exec"), namespace)
    net = namespace["Net"]()
    reference = _torchinfo(namespace["Net"](), (32, 3, 32, 32))  # torchinfo moves it to meta
    assert summary["totals"]["params"] == reference.total_params == 62_006
    extra = sum(torchinfo_extra_mult_adds(layer) for layer in _leaf_layers(reference))
    assert summary["totals"]["mult_adds"] + extra == reference.total_mult_adds
    rows = {row["name"]: row for row in summary["rows"]}
    images = torch.randn(32, 3, 32, 32)
    assert rows["conv1"]["output"] == str(list(net.conv1(images).shape))
    model, loss = [row for row in summary["rows"] if row["depth"] == 0]
    assert (model["class"], model["line"], model["output"]) == ("Net", 64, str(list(net(images).shape)))
    assert (loss["class"], loss["line"], loss["output"]) == ("CrossEntropyLoss", 65, "[]")
    # Call order, as torchinfo: conv1 runs before the pool around it on the same line.
    order = [row["name"] for row in summary["rows"] if row["depth"] == 1]
    assert order == ["conv1", "pool", "conv2", "pool", "fc1", "fc2", "fc3"]
    assert [row["repeat"] for row in summary["rows"] if row["name"] == "pool"] == [False, True]


def test_shared_modules_are_counted_once():
    source = """
    import torch
    import torch.nn as nn

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Linear(16, 16)
            self.act = nn.ReLU()
            self.head = nn.Linear(16, 4)

        def forward(self, x):
            for _ in range(3):
                x = self.act(self.block(x))
            return self.head(x)

    model = Tied()
    out = model(torch.randn(5, 16))
    again = model(torch.randn(5, 16))
    """
    report, _ = run_observed(source)
    summary = model_summary(report, [])
    assert summary["totals"]["params"] == 16 * 16 + 16 + 16 * 4 + 4
    blocks = [row for row in summary["rows"] if row["name"] == "block"]
    assert [row["repeat"] for row in blocks] == [False, True, True]
    assert [row["params"] for row in blocks] == [272, None, None]
    assert len([row for row in summary["rows"] if row["depth"] == 0]) == 1  # the second call: not again
    assert "(repeat)" in summary["markdown"]


def test_rows_up_to_a_shape_error_then_the_error():
    source = (FIXTURES / "shapes" / "lenet_broken.py").read_text()
    report, _ = run_observed(source, str(FIXTURES / "shapes" / "lenet_broken.py"))
    summary = model_summary(report, source.splitlines())
    names = [row["name"] for row in summary["rows"]]
    assert names == ["", "conv1", "pool", "conv2", "pool", "fc1"]
    assert summary["rows"][-1]["failed"] and summary["rows"][0]["failed"]
    assert summary["markdown"].rstrip().endswith(report.errors[0].message)
    assert "**TL201** (line 23)" in summary["markdown"]


def test_a_timeout_inside_a_call_past_the_row_limit_ends_the_job_normally(monkeypatch):
    """Calls past MAX_ROWS are not recorded (a None on the call stack). A timeout inside one of
    them made the tree's clean-up raise, and the job's process died without any report (seen on
    a diffusion model's 1,000-step sampling loop). A small limit here, so that the calls before
    the spinning one take no time whatever the machine's load."""
    from torch_lsp.shapes import observe_modules

    monkeypatch.setattr(observe_modules, "MAX_ROWS", 5)
    report, extras = run_observed("""
        import torch
        from torch import nn

        class Spin(nn.Module):
            def forward(self, x):
                while True:
                    x = x + 1

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.layer = nn.Linear(2, 2)
                self.spin = Spin()

            def forward(self, x):
                for _ in range(10):
                    x = self.layer(x)
                return self.spin(x)

        out = Net()(torch.randn(1, 2))
    """, timeout=2.0)
    assert report.timed_out and "stopped after" in (report.stopped or "")
    # Net and its first 4 layer calls are rows; the other 6 layer calls and Spin are dropped.
    rows = extras["modules"]["rows"]
    assert len(rows) == 5 and extras["modules"]["dropped"] == 7
    assert rows[0]["failed"] and not any(row["failed"] for row in rows[1:])  # Net was interrupted
