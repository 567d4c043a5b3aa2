"""Where a job's input data comes from (worker side; imports torch).

Inputs are whatever the file itself builds: `model(torch.randn(8, 3, 32, 32))` runs forward
with that tensor (on the execution device, through the `torch.device` context). What this
module adds is data the file *loads*:

- torchvision datasets that would read or download files (CIFAR10, MNIST, ...) become
  `FakeData` of the same image size and class count, with the user's transforms;
- weights that would be downloaded (`weights=...`, `pretrained=True`) stay random;
- DataLoaders run in-process (`num_workers=0`) and yield one batch, made on the CPU (samplers
  need real random numbers) from one sample repeated, then moved to the execution device.
- `__torch_lsp__.once(...)` / `once_while(...)`: what the plan puts around training loops.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

from torch_lsp.shapes.tracer import loading_data, to_device

# name -> (image size C, H, W; number of classes)
FAKE_DATASETS: dict[str, tuple[tuple[int, int, int], int]] = {
    "CIFAR10": ((3, 32, 32), 10),
    "CIFAR100": ((3, 32, 32), 100),
    "MNIST": ((1, 28, 28), 10),
    "FashionMNIST": ((1, 28, 28), 10),
    "KMNIST": ((1, 28, 28), 10),
    "EMNIST": ((1, 28, 28), 47),
    "SVHN": ((3, 32, 32), 10),
    "STL10": ((3, 96, 96), 10),
    "ImageNet": ((3, 224, 224), 1000),
    "ImageFolder": ((3, 224, 224), 10),
}
FAKE_DATASET_SIZE = 256


class NoWeights(dict):
    """Stands in for a checkpoint or downloaded state dict; loading it changes nothing."""

    def __missing__(self, key):
        return NoWeights()


# The device of the job now running; the patched DataLoader reads it (a job may re-run on CPU).
_device = torch.device("meta")


class Helper:
    """The `__torch_lsp__` object the plan's edits call."""

    def __init__(self, device: torch.device) -> None:
        global _device
        _device = self.device = device
        self._while_seen: set[int] = set()

    def once(self, iterable: Iterable) -> Iterator:
        with loading_data():
            iterator = iter(iterable)
            try:
                first = next(iterator)
            except StopIteration:
                return
        yield to_device(first, self.device)

    def once_while(self, line: int) -> bool:
        if line in self._while_seen:
            return False
        self._while_seen.add(line)
        return True

    def skipped(self, reason: str = "") -> NoWeights:
        return NoWeights()


def install() -> None:
    _patch_datasets()
    _patch_data_loader()
    _patch_weight_loading()


def _patch_datasets() -> None:
    try:
        import torchvision.datasets as datasets
    except ImportError:
        return
    for name, (image_size, classes) in FAKE_DATASETS.items():
        if hasattr(datasets, name):
            setattr(datasets, name, _fake_dataset(datasets.FakeData, image_size, classes))


def _fake_dataset(fake_data, image_size, classes):
    def build(*args, transform=None, target_transform=None, **kwargs):
        return fake_data(size=FAKE_DATASET_SIZE, image_size=image_size, num_classes=classes,
                         transform=transform, target_transform=target_transform)

    return build


def _patch_data_loader() -> None:
    from torch.utils.data import DataLoader

    real_init, real_iter = DataLoader.__init__, DataLoader.__iter__

    def init_in_process(self, *args, **kwargs):
        # Worker processes would fork the job again and outlive its timeout.
        kwargs.update(num_workers=0, persistent_workers=False, pin_memory=False)
        kwargs.pop("prefetch_factor", None)
        with loading_data():
            real_init(self, *args, **kwargs)

    def one_batch_on_device(self):
        with loading_data():
            batch = _first_batch(self, real_iter)
        if batch is not None:
            yield to_device(batch, _device)

    DataLoader.__init__ = init_in_process
    DataLoader.__iter__ = one_batch_on_device


def _first_batch(loader, real_iter):
    """The loader's first batch, built from one sample repeated: same shapes and dtypes as a
    real batch (collate sees `batch_size` samples of the dataset's own kind) for 1/batch_size of
    the transform cost. A loader that yields differently (iterable datasets, custom batch
    samplers, no automatic batching) gets its real first batch."""
    from torch.utils.data import BatchSampler, IterableDataset

    dataset, batch_size = loader.dataset, loader.batch_size
    plain = (batch_size is not None and not isinstance(dataset, IterableDataset)
             and type(loader.batch_sampler) is BatchSampler and hasattr(dataset, "__len__"))
    if plain:
        size = len(dataset)
        if size == 0:
            return None
        index = next(iter(loader.sampler))
        count = min(batch_size, size) if not loader.drop_last else batch_size
        if loader.drop_last and size < batch_size:
            return None
        return loader.collate_fn([dataset[index]] * count)
    try:
        return next(real_iter(loader))
    except StopIteration:
        return None


def _patch_weight_loading() -> None:
    torch.hub.load_state_dict_from_url = lambda *args, **kwargs: NoWeights()
    real_load_state_dict = torch.nn.Module.load_state_dict

    def load_state_dict(self, state_dict, *args, **kwargs):
        if isinstance(state_dict, NoWeights):
            return None
        return real_load_state_dict(self, state_dict, *args, **kwargs)

    torch.nn.Module.load_state_dict = load_state_dict
    try:
        from torchvision.models import _api
    except ImportError:
        return
    _api.WeightsEnum.get_state_dict = lambda self, *args, **kwargs: NoWeights()
    _api.load_state_dict_from_url = torch.hub.load_state_dict_from_url
