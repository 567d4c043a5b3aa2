"""Start from a pretrained torchvision backbone (issue 5, item 6).

`pretrained.<arch>`: a `build_pretrained_model(num_classes, freeze_backbone=False)` function
that builds the torchvision model with its `weights=` enum (ImageNet weights), optionally
freezes it, and replaces its classifier head with a new `nn.Linear` for the file's number of
classes; the model's constructor call (`Net()` in `net = Net().to(device)`) becomes a call of
that function. The weights download on first use: the function's docstring and a comment at
the call site say so, with the size and where they are cached.

Offered with the cursor on the model variable or its class, in a file that works on images
(torchvision datasets, or a model class with Conv2d layers), whose model is its own class or an
nn.Sequential, and that does not already build a torchvision model.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from torch_lsp.scaffold import action
from torch_lsp.scaffold.codemod import EditPlan, render
from torch_lsp.scaffold.context import ScaffoldContext
from torch_lsp.scaffold.templates import top_level_statement


@dataclass(frozen=True)
class Backbone:
    builder: str  # torchvision.models.<builder>
    weights: str  # torchvision.models.<weights>
    label: str
    download: str  # size of the weights file, for the note
    head: str  # the classifier layer to replace, as an expression on `model`


BACKBONES = {
    "resnet18": Backbone("resnet18", "ResNet18_Weights.DEFAULT", "ResNet-18", "45 MB", "model.fc"),
    "resnet50": Backbone("resnet50", "ResNet50_Weights.DEFAULT", "ResNet-50", "100 MB", "model.fc"),
    "efficientnet_b0": Backbone("efficientnet_b0", "EfficientNet_B0_Weights.DEFAULT", "EfficientNet-B0", "21 MB",
                                "model.classifier[-1]"),
    "mobilenet_v3_small": Backbone("mobilenet_v3_small", "MobileNet_V3_Small_Weights.DEFAULT", "MobileNetV3-Small",
                                   "10 MB", "model.classifier[-1]"),
}

BUILD_FUNCTION = '''
def build_pretrained_model(num_classes: int, freeze_backbone: bool = False) -> $nn.Module:
    """$label pretrained on ImageNet, with a new classifier head for `num_classes` classes.

    The weights (about $download) are downloaded on first use to $$TORCH_HOME/hub/checkpoints
    (by default ~/.cache/torch) and loaded from there afterwards. They expect inputs
    normalised with ImageNet's statistics; the matching preprocessing is
    $models.$weights.transforms().
    freeze_backbone=True trains only the new head: fast, and often enough for small data sets.
    """
    model = $models.$builder(weights=$models.$weights)
    if freeze_backbone:
        for parameter in model.parameters():
            parameter.requires_grad = False
    # The new head is created after freezing, so it always trains.
    $head = $nn.Linear($head.in_features, num_classes)
    return model
'''


def _works_on_images(ctx: ScaffoldContext) -> bool:
    if any(name.startswith("torchvision.datasets.") for name in ctx.called):
        return True
    model_class = ctx.model_class
    return model_class is not None and any(
        ctx.parsed.resolves_to(c.func, "torch.nn.Conv2d") for c in ctx.parsed.walk(model_class, ast.Call))


def _model_call(ctx: ScaffoldContext) -> ast.Call | None:
    """The constructor call of the model: `Net()` in `net = Net().to(device)`."""
    found = ctx.facts.classify(ctx.model.value) if ctx.model else None
    return found[2] if found else None


def _can_start_pretrained(ctx: ScaffoldContext) -> bool:
    if ctx.model is None or ctx.num_classes is None or ctx.defines("build_pretrained_model"):
        return False
    if any(name.startswith("torchvision.models.") for name in ctx.called):
        return False
    constructor = ctx.model.constructor
    own_class = constructor in ctx.facts.module_classes or constructor == "torch.nn.Sequential"
    on_model = ctx.cursor_on_key(ctx.model.key) or (
        ctx.cursor_class is not None and ctx.cursor_class.name == constructor)
    return own_class and on_model and _model_call(ctx) is not None and _works_on_images(ctx)


def _register(arch: str, backbone: Backbone) -> None:
    def build(ctx: ScaffoldContext, plan: EditPlan) -> None:
        models = plan.module_reference(f"torchvision.models.{backbone.builder}", "torchvision.models")
        nn = plan.module_reference("torch.nn.Linear")
        statement = ctx.binding_statement(ctx.model)
        code = render(BUILD_FUNCTION, nn=nn, models=models, label=backbone.label, download=backbone.download,
                      builder=backbone.builder, weights=backbone.weights, head=backbone.head)
        model_class = ctx.model_class
        if model_class is not None and ctx.parsed.parent(model_class) is ctx.parsed.tree \
                and model_class.lineno < statement.lineno:
            plan.insert_after(model_class, "\n\n" + code)  # next to the model it replaces
        else:
            anchor = top_level_statement(ctx, statement)
            after_code = anchor.lineno > 1 and ctx.parsed.line_text(anchor.lineno - 2).strip() != ""
            plan.insert_before(anchor, ("\n\n" if after_code else "") + code + "\n\n", above_comments=True)
        plan.insert_before(statement, f"# {backbone.label} with ImageNet weights: downloads about {backbone.download} "
                                      f"on first use (see build_pretrained_model).\n")
        plan.replace_node(_model_call(ctx),
                          f"build_pretrained_model(num_classes={ctx.num_classes}, freeze_backbone=False)")

    build.__name__ = f"start_from_{arch}"
    action(f"pretrained.{arch}", f"Start from a pretrained {backbone.label} (torchvision, ImageNet weights)",
           when=_can_start_pretrained)(build)


for _arch, _backbone in BACKBONES.items():
    _register(_arch, _backbone)
