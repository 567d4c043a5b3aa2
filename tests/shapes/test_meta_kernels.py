"""Batch norm's meta kernel (shapes/meta_kernels.py) answers what torch's decomposition answers:
shapes, dtypes and strides of every output, errors included, and the shapes of models using it
are those of real CPU execution."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from tests.shapes.helpers import cpu_run, shape_of  # noqa: E402
from torch_lsp.shapes import meta_kernels  # noqa: E402

CHANNELS = 3


@pytest.fixture(scope="module")
def kernels():
    from torch._decomp import decomposition_table

    decomposed = decomposition_table[torch.ops.aten.native_batch_norm.default]
    return decomposed, meta_kernels._native_batch_norm(decomposed)


def _inputs():
    shapes = [(2, CHANNELS), (2, CHANNELS, 5), (2, CHANNELS, 4, 6), (2, CHANNELS, 2, 3, 4)]
    for shape, dtype in itertools.product(shapes, (torch.float32, torch.float16, torch.bfloat16, torch.float64)):
        yield torch.empty(shape, dtype=dtype, device="meta")
        if len(shape) == 4:
            yield torch.empty(shape, dtype=dtype, device="meta").to(memory_format=torch.channels_last)


def _per_channel(present: bool, dtype=torch.float32, size: int = CHANNELS):
    return torch.empty(size, dtype=dtype, device="meta") if present else None


def _described(outputs):
    return [(tuple(t.shape), t.dtype, t.stride()) for t in outputs]


def test_every_output_is_what_the_decomposition_gives(kernels):
    decomposed, fast = kernels
    cases = 0
    for x in _inputs():
        for training, affine, stats in itertools.product((True, False), (True, False), (True, False)):
            if not training and not stats:
                continue  # eval mode without running statistics: F.batch_norm refuses it first
            args = (x, _per_channel(affine), _per_channel(affine), _per_channel(stats), _per_channel(stats),
                    training, 0.1, 1e-5)
            assert _described(fast(*args)) == _described(decomposed(*args)), (x.shape, x.dtype, training, affine, stats)
            cases += 1
    assert cases == 20 * 6


@pytest.mark.parametrize("odd", ["weight of another size", "two-dimensional weight", "integer input", "one dimension"])
def test_unusual_arguments_go_to_torch_and_fail_or_pass_as_there(kernels, odd):
    decomposed, fast = kernels
    x = torch.empty(2, CHANNELS, 4, device="meta")
    weight = _per_channel(True)
    if odd == "weight of another size":
        weight = _per_channel(True, size=CHANNELS + 1)
    elif odd == "two-dimensional weight":
        weight = torch.empty(1, CHANNELS, device="meta")
    elif odd == "integer input":
        x = torch.empty(2, CHANNELS, 4, dtype=torch.int64, device="meta")
    else:
        x = torch.empty(CHANNELS, device="meta")
    args = (x, weight, None, None, None, True, 0.1, 1e-5)
    outcomes = []
    for kernel in (decomposed, fast):
        try:
            outcomes.append(_described(kernel(*args)))
        except Exception as error:  # noqa: BLE001 - the same error from both is the point
            outcomes.append((type(error), str(error)))
    assert outcomes[0] == outcomes[1]


MODEL = """
import torch
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn2 = nn.BatchNorm2d(8)
        self.bn1 = nn.BatchNorm1d(8 * 30 * 30)
        self.bn3 = nn.BatchNorm3d(2, affine=False)
        self.inorm = nn.InstanceNorm2d(8, affine=True)

    def forward(self, x):
        x = self.inorm(self.bn2(self.conv(x)))
        flat = self.bn1(x.flatten(1))
        volume = self.bn3(x.view(4, 2, 4, 30, 30))
        return flat, volume

net = Net()
flat, volume = net(torch.randn(4, 3, 32, 32))
net.eval()
flat_eval, volume_eval = net(torch.randn(4, 3, 32, 32))
(flat.sum() + volume.sum()).backward()
grad = net.conv.weight.grad
"""


def test_a_model_of_batch_norms_has_the_shapes_of_cpu_execution_with_the_kernel_installed():
    """In a fork (the registration lasts for the process): the model on meta, the kernel in
    place, against the same code run for real on the CPU; backward works through it."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        installed, meta = pool.apply(_meta_shapes, (MODEL,))
    assert installed
    reference = cpu_run(MODEL)
    assert meta == {name: shape_of(reference[name]) for name in meta}


def _meta_shapes(source: str):
    installed = meta_kernels.install()
    namespace = {"__name__": "__main__"}
    with torch.device("meta"):
        exec(compile(source, "<meta>", "exec"), namespace)
    names = ("flat", "volume", "flat_eval", "volume_eval", "grad")
    return installed, {name: shape_of(namespace[name]) for name in names}


def test_every_gradient_is_what_the_decomposition_gives():
    from torch._decomp import decomposition_table

    decomposed = decomposition_table[torch.ops.aten.native_batch_norm_backward.default]
    fast = meta_kernels._native_batch_norm_backward(decomposed)
    cases = 0
    for x in _inputs():
        for train, affine, mask in itertools.product((True, False), (True, False), ([True, True, True], [True, False, False])):
            weight = _per_channel(affine, x.dtype)
            statistics = [_per_channel(True) for _ in range(4)]  # running mean/var, saved mean/invstd
            for grad_out in (torch.empty_like(x), torch.empty(x.shape, dtype=x.dtype, device="meta")):
                args = (grad_out, x, weight, *statistics, train, 1e-5, mask)
                expected = [None if t is None else (tuple(t.shape), t.dtype, t.stride()) for t in decomposed(*args)]
                assert [None if t is None else (tuple(t.shape), t.dtype, t.stride()) for t in fast(*args)] == expected, \
                    (x.shape, x.dtype, x.stride(), grad_out.stride(), train, affine, mask)
                cases += 1
    assert cases == 20 * 8 * 2  # inputs x (train, affine, mask) x grad_out layouts
