"""Data augmentation on the training dataset's transforms (issue 5, item 6).

`data.augment`: a `train_transform` with torchvision's v2 transforms (random crop with padding
for small images, RandomResizedCrop for large ones; horizontal flip; ColorJitter for colour
images; Normalize with the dataset's statistics) given to the dataset the training loader
reads. Datasets that shared the old transform (test and validation sets) get an
`eval_transform` with the same normalisation and no randomness: augmenting evaluation data, or
normalising it differently from the training data, are both silent accuracy bugs.

Statistics: the published per-channel mean/std of the dataset class (CIFAR-10/100, MNIST,
Fashion-MNIST, SVHN, STL10, ImageNet-style folders); for other datasets (FakeData, your own),
the values of the file's existing Normalize, else ImageNet's for colour images. Digits
(MNIST, SVHN) are not flipped: a mirrored digit is another glyph.

Offered with the cursor on the training dataset, its transform or the training loader, when
the dataset is a torchvision dataset and its transform has no random augmentation yet.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass

from torch_lsp.analysis.facts import Span
from torch_lsp.analysis.syntax import ParsedModule
from torch_lsp.analysis.syntax import target_key
from torch_lsp.scaffold import action
from torch_lsp.scaffold.codemod import EditPlan, render
from torch_lsp.scaffold.context import ScaffoldContext

_AUGMENTATIONS = re.compile(r"Random|AutoAugment|TrivialAugment|AugMix|ColorJitter|RandAugment|CutMix|MixUp")
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class DatasetInfo:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int
    flip: bool = True

    @property
    def channels(self) -> int:
        return len(self.mean)


KNOWN_DATASETS = {
    "CIFAR10": DatasetInfo((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32),
    "CIFAR100": DatasetInfo((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 32),
    "MNIST": DatasetInfo((0.1307,), (0.3081,), 28, flip=False),
    "FashionMNIST": DatasetInfo((0.2860,), (0.3530,), 28),
    "KMNIST": DatasetInfo((0.1918,), (0.3483,), 28, flip=False),
    "SVHN": DatasetInfo((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 32, flip=False),
    "STL10": DatasetInfo((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), 96),
    "ImageFolder": DatasetInfo(*_IMAGENET, 224),
    "ImageNet": DatasetInfo(*_IMAGENET, 224),
}

TRANSFORMS = '''
# Augment the training images only (random crops, flips, colour changes); evaluation images
# get the same normalisation without the randomness.
$train = $v2.Compose([
    $v2.ToImage(),
$augment    $v2.ToDtype($torch.float32, scale=True),
    $v2.Normalize(mean=$mean, std=$std),
])
'''

EVAL_TRANSFORM = '''
$eval = $v2.Compose([
    $v2.ToImage(),
$resize    $v2.ToDtype($torch.float32, scale=True),
    $v2.Normalize(mean=$mean, std=$std),
])
'''


@dataclass(frozen=True)
class TrainingData:
    dataset: ast.Call  # the torchvision dataset constructor the training loader reads
    statement: ast.stmt  # where it is built
    transform: ast.expr | None  # its transform= argument
    transform_value: ast.expr | None  # what that argument is bound to (the Compose call)
    shared_with: list[ast.Call]  # other datasets given the same transform (test/validation sets)


def training_data(ctx: ScaffoldContext) -> TrainingData | None:
    """The training dataset and its transform; found once per parsed text (`offers` asks on
    every cursor move, and the answer does not depend on the cursor)."""
    return _training_data(ctx.parsed)


@functools.lru_cache(maxsize=16)
def _training_data(parsed: ParsedModule) -> TrainingData | None:
    ctx = ScaffoldContext(parsed, Span.of(0, 0, 0, 0))
    loader = ctx.train_loader
    found = ctx.facts.classify(loader.value) if loader is not None else None
    call = found[2] if found else None
    if call is None:
        return None
    dataset = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "dataset"), None)
    if isinstance(dataset, ast.Name):
        dataset = _value_bound_before(ctx, dataset.id, call)
    if not isinstance(dataset, ast.Call) or not (ctx.parsed.qualified_name(dataset.func) or "").startswith(
            "torchvision.datasets."):
        return None
    transform = _keyword(dataset, "transform")
    value = _value_bound_before(ctx, transform.id, dataset) if isinstance(transform, ast.Name) else transform
    shared = []
    if transform is not None:
        for other in ctx.parsed.walk(scope_of_node(ctx, dataset), ast.Call):
            other_transform = _keyword(other, "transform")
            if other is not dataset and other_transform is not None and ctx.parsed.code(other_transform) == \
                    ctx.parsed.code(transform) and (ctx.parsed.qualified_name(other.func) or "").startswith(
                    "torchvision.datasets."):
                shared.append(other)
    return TrainingData(dataset, ctx.parsed.enclosing(dataset, ast.stmt), transform, value, shared)


def scope_of_node(ctx: ScaffoldContext, node: ast.AST) -> ast.AST:
    scope = ctx.parsed.enclosing(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    return scope if scope is not None else ctx.parsed.tree


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _value_bound_before(ctx: ScaffoldContext, name: str, use: ast.AST) -> ast.expr | None:
    """The value last assigned to `name` before `use`, in its scope or at module level."""
    scopes = {scope_of_node(ctx, use), ctx.parsed.tree}
    found = None
    for node in ctx.parsed.walk(kind=ast.Assign):
        if len(node.targets) == 1 and target_key(node.targets[0]) == name and node.lineno < use.lineno \
                and scope_of_node(ctx, node) in scopes:
            found = node.value
    return found


def _can_augment(ctx: ScaffoldContext) -> bool:
    if ctx.defines("train_transform"):
        return False
    data = training_data(ctx)
    if data is None:
        return False
    cursor_nodes = [data.statement, ctx.binding_statement(ctx.train_loader), data.transform_value]
    if not any(ctx.cursor_in(node) for node in cursor_nodes):
        return False
    return data.transform_value is None or not _AUGMENTATIONS.search(ctx.parsed.code(data.transform_value))


def dataset_info(ctx: ScaffoldContext, data: TrainingData) -> tuple[DatasetInfo, str]:
    """The dataset's statistics and image size, and a comment saying where they come from."""
    name = (ctx.parsed.qualified_name(data.dataset.func) or "").rsplit(".", 1)[-1]
    if name in KNOWN_DATASETS:
        return KNOWN_DATASETS[name], f"{name}'s published statistics"
    channels, size = 3, 224
    shape = _keyword(data.dataset, "image_size")
    if isinstance(shape, ast.Tuple) and all(isinstance(e, ast.Constant) for e in shape.elts) and len(shape.elts) == 3:
        channels, size = shape.elts[0].value, shape.elts[1].value
    normalize = _existing_normalize(ctx, data)
    if normalize is not None:
        mean, std = normalize
        return DatasetInfo(mean, std, size), "the values of this file's Normalize"
    if channels == 3:
        return DatasetInfo(*_IMAGENET, size), "ImageNet's statistics (compute your dataset's own for a better fit)"
    return DatasetInfo((0.5,) * channels, (0.5,) * channels, size), "a neutral 0.5 (compute your dataset's own)"


def _existing_normalize(ctx: ScaffoldContext, data: TrainingData) -> tuple[tuple, tuple] | None:
    if data.transform_value is None:
        return None
    for call in ctx.parsed.walk(data.transform_value, ast.Call):
        if (ctx.parsed.qualified_name(call.func) or "").endswith(".Normalize"):
            values = list(call.args[:2]) + [k.value for k in call.keywords if k.arg in ("mean", "std")]
            try:
                mean, std = (tuple(ast.literal_eval(v)) for v in values[:2])
            except (ValueError, TypeError, SyntaxError):
                return None
            return mean, std
    return None


def _numbers(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


@action("data.augment", "Augment the training data (v2 transforms: random crop, flip, colour jitter, Normalize)",
        when=_can_augment)
def add_augmentation(ctx: ScaffoldContext, plan: EditPlan) -> None:
    data = training_data(ctx)
    info, source_of_stats = dataset_info(ctx, data)
    plan.add_import("from torchvision.transforms import v2")
    names = {"v2": "v2", "torch": plan.module_reference("torch.float32"), "train": "train_transform",
             "eval": "eval_transform", "mean": _numbers(info.mean), "std": _numbers(info.std)}
    crop = (f"    v2.RandomCrop({info.size}, padding={max(info.size // 8, 2)}),\n" if info.size <= 64
            else f"    v2.RandomResizedCrop({info.size}, antialias=True),\n")
    flip = "    v2.RandomHorizontalFlip(),\n" if info.flip else ""
    jitter = "    v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),\n" if info.channels == 3 else ""
    code = render(TRANSFORMS, augment=crop + flip + jitter, **names)
    code = code.replace("    v2.Normalize(", f"    # Normalize with {source_of_stats}.\n    v2.Normalize(", 1)
    if data.shared_with:
        resize = "" if info.size <= 64 else f"    v2.Resize({info.size * 256 // 224}, antialias=True),\n    v2.CenterCrop({info.size}),\n"
        code += render(EVAL_TRANSFORM, resize=resize, **names)
    first = min([data.statement, *(ctx.parsed.enclosing(d, ast.stmt) for d in data.shared_with)],
                key=lambda s: s.lineno)
    plan.insert_before(first, code, above_comments=True)
    plan.set_keyword(data.dataset, "transform", names["train"])
    for other in data.shared_with:
        plan.set_keyword(other, "transform", names["eval"])
