"""Stand-ins for torchvision datasets that would read or download files (worker side).

Each dataset torch-lsp knows becomes a class of the same name deriving from `FakeData`, with
the real dataset's image size, class count and length (so `len(train_set)`, `random_split` and
`len(loader)` are what the user expects), its transforms (by keyword **or position**: the real
signature binds the arguments), and `.data` / `.targets` / `.classes` like the real one, so a
subclass that reads `self.data[i]` works. Nothing is read or downloaded. A note says so at the
line that built it: "CIFAR10 replaced by FakeData (3×32×32, 10 classes): nothing was downloaded".

Every other torchvision dataset is tried for real; when its files are not here it stops the
analysis quietly (`DataUnavailable`) with a note naming the line, instead of failing inside
torchvision (which would look like a shape error).
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass

from torch_lsp.shapes import job_notes
from torch_lsp.shapes.guards import ExecutionBlocked
from torch_lsp.shapes.tracer import loading_data

# Used when a dataset's folder does not exist and its length is unknown (ImageFolder).
DEFAULT_LENGTH = 10_000
_VARIABLE = " (a stand-in size: the real images vary)"


@dataclass(frozen=True)
class Known:
    image_size: tuple[int, int, int]  # C, H, W
    classes: int
    train: int  # length of the training split
    test: int  # length of the test split (or the other splits)
    note: str = ""
    data_layout: str = ""  # "tensor" (MNIST family: uint8 [N, H, W]), "numpy" (CIFAR: [N, H, W, C])


KNOWN: dict[str, Known] = {
    "CIFAR10": Known((3, 32, 32), 10, 50_000, 10_000, data_layout="numpy"),
    "CIFAR100": Known((3, 32, 32), 100, 50_000, 10_000, data_layout="numpy"),
    "MNIST": Known((1, 28, 28), 10, 60_000, 10_000, data_layout="tensor"),
    "FashionMNIST": Known((1, 28, 28), 10, 60_000, 10_000, data_layout="tensor"),
    "KMNIST": Known((1, 28, 28), 10, 60_000, 10_000, data_layout="tensor"),
    "QMNIST": Known((1, 28, 28), 10, 60_000, 60_000, data_layout="tensor"),
    "EMNIST": Known((1, 28, 28), 47, 112_800, 18_800, data_layout="tensor"),
    "USPS": Known((1, 16, 16), 10, 7_291, 2_007),
    "SEMEION": Known((1, 16, 16), 10, 1_593, 1_593),
    "FER2013": Known((1, 48, 48), 7, 28_709, 3_589),
    "SVHN": Known((3, 32, 32), 10, 73_257, 26_032),
    "STL10": Known((3, 96, 96), 10, 5_000, 8_000),
    "EuroSAT": Known((3, 64, 64), 10, 27_000, 27_000),
    "PCAM": Known((3, 96, 96), 2, 262_144, 32_768),
    "GTSRB": Known((3, 32, 32), 43, 26_640, 12_630, _VARIABLE),
    "ImageNet": Known((3, 224, 224), 1000, 1_281_167, 50_000, _VARIABLE),
    "Imagenette": Known((3, 224, 224), 10, 9_469, 3_925, _VARIABLE),
    "Places365": Known((3, 256, 256), 365, 1_803_460, 36_500),
    "Flowers102": Known((3, 224, 224), 102, 1_020, 6_149, _VARIABLE),
    "Food101": Known((3, 224, 224), 101, 75_750, 25_250, _VARIABLE),
    "DTD": Known((3, 224, 224), 47, 1_880, 1_880, _VARIABLE),
    "OxfordIIITPet": Known((3, 224, 224), 37, 3_680, 3_669, _VARIABLE),
    "StanfordCars": Known((3, 224, 224), 196, 8_144, 8_041, _VARIABLE),
    "FGVCAircraft": Known((3, 224, 224), 100, 3_334, 3_333, _VARIABLE),
    "Caltech101": Known((3, 224, 224), 101, 8_677, 8_677, _VARIABLE),
    "Caltech256": Known((3, 224, 224), 257, 30_607, 30_607, _VARIABLE),
    "Country211": Known((3, 224, 224), 211, 31_650, 21_100, _VARIABLE),
    "ImageFolder": Known((3, 224, 224), 10, DEFAULT_LENGTH, DEFAULT_LENGTH, _VARIABLE),
}
# EMNIST's class count depends on its split.
_EMNIST_CLASSES = {"byclass": 62, "bymerge": 47, "balanced": 47, "letters": 26, "digits": 10, "mnist": 10}
# Base classes and helpers that are not datasets of files.
_NOT_WRAPPED = {"FakeData", "VisionDataset", "DatasetFolder", "wrap_dataset_for_transforms_v2"}


class DataUnavailable(ExecutionBlocked):
    """The data the code needs is not here and has no stand-in: the analysis stops quietly."""


def install() -> None:
    """Put the stand-ins in torchvision's place (in a job's fork: its patches end with it)."""
    try:
        import torchvision.datasets as datasets
    except ImportError:
        return
    for name, real, replacement in stand_ins(datasets):
        _replace(datasets, real, name, replacement)


_MADE: list = []  # [(torchvision.datasets, [(name, real class, stand-in class)])]: once a process


def stand_ins(datasets) -> list[tuple[str, type, type]]:
    """Each torchvision dataset class with the class that takes its place. Made once per process,
    by the worker before it forks, once it imports torchvision (`prepare_stand_ins`): made anew
    in every fork, the ~70 classes and their signatures were 3 ms of each job's CPU."""
    if _MADE and _MADE[0][0] is datasets:
        return _MADE[0][1]
    made = []
    for name in list(getattr(datasets, "__all__", ())):
        if name in _NOT_WRAPPED:  # before getattr: torchvision imports wrap_dataset_for_transforms_v2's
            continue  # 32 modules when it is read (a module __getattr__), ~9 ms in every job
        real = getattr(datasets, name, None)
        if not inspect.isclass(real) or real.__dict__.get(_REPLACEMENT):
            continue  # (installed already: a replacement is never wrapped again)
        made.append((name, real, _stand_in(name, real, datasets.FakeData) if name in KNOWN else _guarded(name, real)))
    _MADE[:] = [(datasets, made)]
    return made


def prepare_stand_ins() -> None:
    """In the worker, once torchvision is imported: the stand-in classes its forks will install."""
    datasets = sys.modules.get("torchvision.datasets")
    if datasets is not None:
        stand_ins(datasets)


_REPLACEMENT = "_torch_lsp_replacement"  # set on the classes install() puts in torchvision's place


def _replace(datasets, real, name: str, replacement) -> None:
    setattr(replacement, _REPLACEMENT, True)
    setattr(datasets, name, replacement)
    defining = sys.modules.get(real.__module__)
    if defining is not None and getattr(defining, name, None) is real:
        setattr(defining, name, replacement)  # `from torchvision.datasets.cifar import CIFAR10`


def is_stand_in(dataset) -> bool:
    return isinstance(dataset, StandIn)


# -- stand-ins -----------------------------------------------------------------------------------


class StandIn:
    """Mixin of every stand-in class (the FakeData subclass is made per torchvision install)."""

    stand_in_for = ""
    known: Known

    def grow_to(self, length: int) -> None:
        """Never shorter than a loader's batch: a batch_size=1000 loader shows 1000."""
        if self.size < length:
            self.size = length


def _stand_in(name: str, real, fake_data):
    known = KNOWN[name]
    signature = _init_signature(real)

    def __init__(self, *args, **kwargs):
        bound = _bind(signature, args, kwargs)
        extra = bound.pop("kwargs", {}) or {}
        bound.update(extra)
        root = bound.get("root")
        classes = _EMNIST_CLASSES.get(bound.get("split"), known.classes) if name == "EMNIST" else known.classes
        training = bound.get("train", True) is not False and bound.get("split", "train") in ("train", "train+unlabeled")
        length = known.train if training else known.test
        fake_data.__init__(self, size=length, image_size=known.image_size, num_classes=classes,
                           transform=bound.get("transform"), target_transform=bound.get("target_transform"))
        self.root, self.train = root, training
        if "split" in bound:
            self.split = bound["split"]
        self.classes = [str(i) for i in range(classes)]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        c, h, w = known.image_size
        job_notes.note("stand-in", f"{name} replaced by FakeData ({c}×{h}×{w}{known.note}, {classes} classes, "
                                  f"{length:,} samples): nothing was read or downloaded")

    cls = type(name, (StandIn, fake_data), {
        "__init__": __init__, "stand_in_for": name, "known": known, "__module__": real.__module__,
        "__doc__": f"torch-lsp stand-in for torchvision.datasets.{name} (FakeData of the same shape).",
        "data": property(_data), "targets": property(_targets),
    })
    if name == "ImageFolder":
        cls.__new__ = _image_folder_new(cls, real)
    return cls


def _image_folder_new(cls, real):
    """An ImageFolder whose folder exists is read for real (one image per batch is cheap)."""

    def __new__(klass, *args, **kwargs):
        bound = _bind(_init_signature(real), args, kwargs)
        root = bound.get("root")
        if klass is cls and root is not None and os.path.isdir(root):
            return real(*args, **kwargs)
        return object.__new__(klass)

    return __new__


def _data(self):
    """`.data` like the real dataset's, without allocating it: one zero image broadcast."""
    c, h, w = self.known.image_size
    with loading_data():
        if self.known.data_layout == "numpy":
            import numpy as np

            return np.broadcast_to(np.zeros((1, h, w, c), dtype=np.uint8), (self.size, h, w, c))
        import torch

        return torch.zeros(1, h, w, dtype=torch.uint8).expand(self.size, h, w)


def _targets(self):
    if self.known.data_layout == "tensor":
        import torch

        with loading_data():
            return torch.zeros(self.size, dtype=torch.long)
    return [0] * self.size


def _init_signature(real):
    try:
        return inspect.signature(real.__init__)
    except (TypeError, ValueError):
        return None


def _bind(signature, args, kwargs) -> dict:
    """The call's arguments by parameter name, as the real dataset would see them."""
    if signature is None:
        return dict(kwargs)
    try:
        bound = signature.bind_partial(None, *args, **kwargs)  # None stands for self
    except TypeError:
        return dict(kwargs)
    arguments = dict(bound.arguments)
    arguments.pop(next(iter(signature.parameters)), None)
    return arguments


# -- datasets without a stand-in -------------------------------------------------------------------


def _guarded(name: str, real):
    """The real dataset when its files are here; else a quiet stop with a note."""
    real_init = real.__init__

    def __init__(self, *args, **kwargs):
        try:
            real_init(self, *args, **kwargs)
        except (OSError, RuntimeError, ExecutionBlocked) as error:  # missing files, a blocked download
            where = job_notes.here()
            message = f"torchvision.datasets.{name} needs its files, which are not here, and has no stand-in"
            job_notes.note("data", f"{message}: shapes stop at line {where[1] + 1}", where)
            raise DataUnavailable(message) from error

    return type(name, (real,), {"__init__": __init__, "__module__": real.__module__, "__doc__": real.__doc__})
