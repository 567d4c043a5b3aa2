"""Where a job's input data comes from (worker side; imports torch).

Inputs are whatever the file itself builds: `model(torch.randn(8, 3, 32, 32))` runs forward
with that tensor (on the execution device, through the `torch.device` context). What this
module adds is data the file *loads*:

- torchvision datasets that would read or download files (CIFAR10, MNIST, ...) become
  `FakeData` of the same image size, class count and length, with the user's transforms
  (datasets.py), never shorter than the batch of a loader over them;
- `torch.load` (redirected here by the plan) loads a file of the workspace with
  `weights_only=True` onto the execution device; a missing file stands in as an empty state
  dict that `load_state_dict` ignores, and stops the analysis quietly where it is used as data;
- weights that would be downloaded (`weights=...`, `pretrained=True`) stay random;
- DataLoaders run in-process (`num_workers=0`) and yield one batch, made on the CPU (samplers
  need real random numbers) from one sample repeated, then moved to the execution device.
- `__torch_lsp__.once(...)` / `once_while(...)`: what the plan puts around training loops.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from typing import Callable, Iterable, Iterator

import torch

from torch_lsp.shapes import batch_dims, datasets, job_notes
from torch_lsp.shapes.tracer import loading_data, to_device


class NoWeights(dict):
    """Stands in for a checkpoint or downloaded state dict; loading it changes nothing."""

    def __missing__(self, key):
        return NoWeights()


class MissingData(NoWeights):
    """What `torch.load` of a file that is not here gives: an empty state dict for
    `load_state_dict`, and a quiet stop (with a note naming both lines) where it is used as data."""

    def __init__(self, name: str, why: str, where: tuple[str | None, int]) -> None:
        super().__init__()
        self._name, self._why, self._where = name, why, where

    def _unavailable(self) -> datasets.DataUnavailable:
        path, line = job_notes.here()
        message = f"the data of `{self._name}` (torch.load at line {self._where[1] + 1}) {self._why}"
        job_notes.note("data", f"{message}: shapes stop at line {line + 1}", (path, line))
        return datasets.DataUnavailable(message)

    def __getitem__(self, key):
        if isinstance(key, str):
            return super().__getitem__(key)
        raise self._unavailable()

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        raise self._unavailable()


# The device of the job now running; the patched DataLoader reads it (a job may re-run on CPU).
_device = torch.device("meta")
# A batch size that replaces the DataLoaders' own, to measure memory at other batch sizes.
_batch_size: int | None = None


def set_batch_size(batch_size: int | None) -> None:
    """DataLoaders yield batches of `batch_size` (None: their own) from now on in this job."""
    global _batch_size
    _batch_size = batch_size


class Helper:
    """The `__torch_lsp__` object the plan's edits call."""

    def __init__(self, device: torch.device) -> None:
        global _device
        _device = self.device = device
        self._while_seen: set[int] = set()

    def once(self, iterable: Iterable) -> Iterator:
        with loading_data(unobserved=True):
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

    def load(self, f, map_location=None, pickle_module=None, *, weights_only=None, mmap=None, **kwargs):
        """`torch.load` as the plan runs it: only workspace files, only tensors, on our device."""
        where = job_notes.here()
        if not isinstance(f, (str, bytes, os.PathLike)):  # a buffer the code filled itself
            with loading_data():
                return torch.load(f, map_location=self.device, weights_only=True)
        name = os.fsdecode(f)
        path = os.path.realpath(name)
        if not os.path.isfile(path):
            return self._stand_in(name, "is not here", where)
        root = os.path.realpath(job_notes.workspace() or os.getcwd())
        if not path.startswith(root + os.sep):
            return self._stand_in(name, "is outside the workspace", where)
        try:
            with loading_data():
                return torch.load(path, map_location=self.device, weights_only=True, mmap=mmap)
        except Exception:  # noqa: BLE001 - pickled objects, a corrupt file: not the user's shape error
            return self._stand_in(name, "holds more than tensors (torch-lsp loads with weights_only=True)", where)

    @staticmethod
    def _stand_in(name: str, why: str, where) -> MissingData:
        job_notes.note("data", f"`{name}` {why}: torch.load gave an empty stand-in (a model loading it keeps "
                              "its weights)", where)
        return MissingData(name, why, where)


def install() -> None:
    # torchvision is imported only by jobs whose files use it (worker.py): patched when it is.
    when_imported("torchvision.datasets", datasets.install)
    _patch_data_loader()
    _patch_weight_loading()


def _patch_data_loader() -> None:
    from torch.utils.data import DataLoader

    real_init, real_iter = DataLoader.__init__, DataLoader.__iter__

    def init_in_process(self, *args, **kwargs):
        # Worker processes would fork the job again and outlive its timeout.
        kwargs.update(num_workers=0, persistent_workers=False, pin_memory=False)
        kwargs.pop("prefetch_factor", None)
        with loading_data():
            real_init(self, *args, **kwargs)
        if datasets.is_stand_in(self.dataset) and isinstance(self.batch_size, int):
            self.dataset.grow_to(self.batch_size)
        batch_dims.loader_made(self)

    def one_batch_on_device(self):
        with loading_data(unobserved=True):
            batch = _first_batch(self, real_iter)
        if batch is not None:
            batch = to_device(batch, _device)
            if _batch_size is not None:  # grown on the device: a batch of 100,000 costs nothing on meta
                with torch._C.DisableTorchFunction():
                    batch = _resized(batch, _batch_size)
            yield batch

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
        if _batch_size is not None:
            return loader.collate_fn([dataset[index]])  # one sample; resized on the device
        count = min(batch_size, size) if not loader.drop_last else batch_size
        if loader.drop_last and size < batch_size:
            return None
        # A second run with larger batches tells which dimensions follow the batch (batch_dims.py).
        count = min(count + batch_dims.extra_samples(), size)
        return loader.collate_fn([dataset[index]] * count)
    try:
        return next(real_iter(loader))
    except StopIteration:
        return None


def _resized(batch, batch_size: int):
    """Every tensor of a batch with `batch_size` rows (the first one repeated). A tensor without
    a batch dimension (a scalar) stays as it is."""
    if isinstance(batch, torch.Tensor):
        return batch[:1].repeat(batch_size, *([1] * (batch.dim() - 1))) if batch.dim() else batch
    if isinstance(batch, (list, tuple)):
        items = [_resized(item, batch_size) for item in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
    if isinstance(batch, dict):
        return {key: _resized(value, batch_size) for key, value in batch.items()}
    return batch


def _patch_weight_loading() -> None:
    torch.hub.load_state_dict_from_url = lambda *args, **kwargs: NoWeights()
    real_load_state_dict = torch.nn.Module.load_state_dict

    def load_state_dict(self, state_dict, *args, **kwargs):
        if isinstance(state_dict, NoWeights):
            return None
        return real_load_state_dict(self, state_dict, *args, **kwargs)

    torch.nn.Module.load_state_dict = load_state_dict
    when_imported("torchvision.models._api", _no_torchvision_weights)


def _no_torchvision_weights() -> None:
    api = sys.modules["torchvision.models._api"]
    api.WeightsEnum.get_state_dict = lambda self, *args, **kwargs: NoWeights()
    api.load_state_dict_from_url = torch.hub.load_state_dict_from_url


def when_imported(name: str, patch: Callable[[], None]) -> None:
    """Run `patch` once module `name` is imported: now if it is, else right after its import."""
    if name in sys.modules:
        patch()
    else:
        sys.meta_path.insert(0, _PatchAfterImport(name, patch))


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Finds `name` with the other finders and patches it once its code has run."""

    def __init__(self, name: str, patch: Callable[[], None]) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                spec.loader = _ThenPatch(spec.loader, self.patch)
                return spec
        return None


class _ThenPatch(importlib.abc.Loader):
    def __init__(self, loader, patch: Callable[[], None]) -> None:
        self.loader, self.patch = loader, patch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        self.patch()
