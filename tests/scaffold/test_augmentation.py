"""Data augmentation: the training images change from one read to the next, the evaluation
images do not, and both are normalised the same way."""

import pytest

from harness import (Program, apply_action, assert_no_new_findings, fixture, inserted_text, offered, run_batch, span_at,
                     with_probe)

MNIST_AND_CIFAR = '''
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

transform = transforms.Compose([transforms.ToTensor()])
{name}_train = datasets.{cls}("data", train=True, download=True, transform=transform)
{name}_test = datasets.{cls}("data", train=False, download=True, transform=transform)
train_loader = DataLoader({name}_train, batch_size=64, shuffle=True)
test_loader = DataLoader({name}_test, batch_size=64)
'''


SEED_PROBES = """
    first, second = trainset[0][0], trainset[0][0]
    probe("image", [list(first.shape), str(first.dtype)])
    probe("differs", not torch.equal(first, second))
    probe("normalised", bool(first.min() < 0))  # ToDtype scales to [0, 1], Normalize shifts it
"""

EVAL_PROBES = """
    from PIL import Image
    image = Image.new("RGB", (32, 32), (255, 0, 128))
    a, b = eval_transform(image), eval_transform(image)
    probe("eval", [torch.equal(a, b), [round(float(v), 3) for v in a[:, 0, 0]]])
"""


def augmented(name: str, cursor: str) -> tuple[str, str]:
    before = fixture(name)
    after = apply_action(before, "data.augment", span_at(before, cursor))
    assert_no_new_findings(before, after)
    return before, after


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    _, seed = augmented("cifar10_seed.py", "trainset =")
    _, main = augmented("vision_main.py", "train_loader = DataLoader")
    # The evaluation pipeline alone, out of main(), to run it on one image.
    eval_code = main[main.index("    eval_transform = "):main.index("    train_set =")]
    pipeline = "import torch\nfrom torchvision.transforms import v2\n" + eval_code.replace("\n    ", "\n").strip() + "\n"
    return run_batch([Program("seed", with_probe(seed, SEED_PROBES)), Program("main", main),
                      Program("eval", with_probe(pipeline, EVAL_PROBES))], tmp_path_factory.mktemp("augment")).assert_ok()


@pytest.mark.slow  # trains the generated program for real
def test_seed_training_images_are_augmented_and_training_runs(runs):
    assert runs.probe("seed.image") == [[3, 32, 32], "torch.float32"]
    assert runs.probe("seed.differs") is True and runs.probe("seed.normalised") is True
    assert runs.probe("seed.run")["steps"] == 4


@pytest.mark.slow  # trains the generated program for real
def test_shared_transform_splits_into_train_and_eval(runs):
    _, after = augmented("vision_main.py", "train_loader = DataLoader")
    assert "num_classes=NUM_CLASSES, transform=train_transform)" in after
    assert "transform=eval_transform, random_offset=samples)" in after
    # The evaluation pipeline is deterministic and normalises like the training one.
    assert runs.probe("eval.eval") == [True, [1.0, -1.0, round((128 / 255 - 0.5) / 0.5, 3)]]
    assert runs.probe("main.run")["steps"] == 8


def test_known_datasets_get_their_statistics_and_digits_are_not_flipped():
    mnist = MNIST_AND_CIFAR.format(name="mnist", cls="MNIST")
    added = inserted_text(mnist, apply_action(mnist, "data.augment", span_at(mnist, "mnist_train =")))
    assert "v2.RandomCrop(28, padding=3)" in added and "Flip" not in added and "ColorJitter" not in added
    assert added.count("v2.Normalize(mean=[0.1307], std=[0.3081])") == 2  # train and eval
    cifar = MNIST_AND_CIFAR.format(name="cifar", cls="CIFAR100")
    added = inserted_text(cifar, apply_action(cifar, "data.augment", span_at(cifar, "train_loader =")))
    assert "v2.RandomHorizontalFlip()" in added and "# Normalize with CIFAR100's published statistics." in added
    assert added.count("v2.Normalize(mean=[0.5071, 0.4865, 0.4409], std=[0.2673, 0.2564, 0.2762])") == 2
    folder = MNIST_AND_CIFAR.format(name="folder", cls="ImageFolder").replace(", train=True, download=True", "")
    added = inserted_text(folder, apply_action(folder, "data.augment", span_at(folder, "folder_train =")))
    assert "v2.RandomResizedCrop(224, antialias=True)" in added and "v2.CenterCrop(224)" in added


def test_not_offered_for_tensors_or_when_already_augmented():
    for name, cursor in [("loop_tensor.py", "train_loader ="), ("no_loop.py", "train_loader =")]:
        source = fixture(name)
        assert "data.augment" not in offered(source, span_at(source, cursor))
    augmented = fixture("cifar10_seed.py").replace("[transforms.ToTensor(),", "[transforms.RandomCrop(32, padding=4), transforms.ToTensor(),")
    assert "data.augment" not in offered(augmented, span_at(augmented, "trainset ="))
    seed = fixture("cifar10_seed.py")
    assert "data.augment" not in offered(seed, span_at(seed, "class Net"))
