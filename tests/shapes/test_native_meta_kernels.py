"""Torch's C++ meta kernels back in place of its Python meta registrations
(meta_kernels.use_native_kernels): outputs and errors on meta are those of CPU execution, the ops
without a C++ kernel keep their Python one, and a torch whose registrations are not all accounted
for is left as it is.

Each check runs in a fresh interpreter: the change lasts for the process, and "before" needs a
process where it has not happened."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

# Runs in a fresh interpreter; prints one JSON object.
PROBE = textwrap.dedent("""
    import json, sys
    import torch
    from torch_lsp.shapes import meta_kernels

    def python_frames_of(fn):
        # Python frames of torch's own meta code opened while fn runs on meta tensors.
        fn()  # first calls import what torch's meta code needs
        frames = []
        def profile(frame, event, arg):
            if event == "call" and "/torch/_" in frame.f_code.co_filename:
                frames.append(frame.f_code.co_name)
        sys.setprofile(profile)
        try:
            fn()
        finally:
            sys.setprofile(None)
        return len(frames)

    x, w, b = (torch.empty(shape, device="meta") for shape in ((4, 5), (5, 3), (3,)))
    q = torch.empty(2, 4, 6, 8, device="meta")
    ops = {"mul": lambda: x * x, "addmm": lambda: torch.addmm(b, x, w),
           # no C++ meta kernel, a C++ kernel for every backend made of ops that have one
           "layer_norm": lambda: torch.nn.functional.layer_norm(x, (5,)),
           "attention": lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)}
    out = {"before": {name: python_frames_of(fn) for name, fn in ops.items()}}
    if sys.argv[1] == "unknown registration":
        # A Python meta registration made after torch's own: nothing to restore it from.
        import torch._meta_registrations as registrations
        registrations._meta_lib_dont_use_me_use_register_meta.impl(
            "_foobar", lambda *args, **kwargs: torch.empty(()))  # a test op of torch's with a CPU kernel only
    meta_kernels.install()  # as the worker does: batch norm's kernel too (layer norm runs it)
    out["native"] = meta_kernels.use_native_kernels()
    out["again"] = meta_kernels.use_native_kernels()
    out["after"] = {name: python_frames_of(fn) for name, fn in ops.items()}
    print(json.dumps(out))
""")


def _probe(case: str = "plain") -> dict:
    run = subprocess.run([sys.executable, "-c", PROBE, case], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def probed() -> dict:
    return _probe()


def test_ops_with_a_cpp_meta_kernel_no_longer_run_python_on_meta(probed):
    before, after = probed["before"], probed["after"]
    assert all(frames > 0 for frames in before.values())  # torch's Python references
    assert after["mul"] == 0 and after["addmm"] == 0
    # Made of ops with C++ kernels, and of batch norm's and where's kernels (ours): a few frames
    # where torch's Python ones opened hundreds.
    assert after["layer_norm"] < 20 and after["attention"] < 20, probed
    assert before["layer_norm"] > 200 and before["attention"] > 200, probed
    assert probed["native"] > 100  # hundreds of ops: every pointwise op, matmuls, pools, reductions
    assert probed["again"] == probed["native"]  # once per process


def test_a_registration_of_unknown_origin_leaves_torch_as_it_is():
    probed = _probe("unknown registration")
    assert probed["native"] == 0 and probed["again"] == 0
    assert probed["after"]["mul"] > 0 and probed["after"]["addmm"] > 0  # still torch's Python references


# What CPU does and what meta does with the C++ kernels back: the same shapes, dtypes, strides,
# and the same error message. Pointwise ops with broadcasting, scalars, mixed dtypes and
# channels-last inputs; matmuls; in-place ops; reductions, pools and the ops that keep their
# Python kernel (layer norm, softmax's safe variant inside attention, cross entropy); relu,
# which runs clamp_min as on CPU.
CASES = {
    "add same shape": lambda t: t(2, 3) + t(2, 3),
    "mul broadcast": lambda t: t(4, 1, 5) * t(3, 1),
    "mul by a Python float, integer tensor": lambda t: t(3, 4, dtype=torch.int64) * 2.5,
    "add a 0-dim double to a float tensor": lambda t: t(3) + t(dtype=torch.float64),
    "add int and bfloat16": lambda t: t(2, 3, dtype=torch.int32) + t(2, 3, dtype=torch.bfloat16),
    "div two integer tensors": lambda t: t(2, 3, dtype=torch.int64) / t(2, 3, dtype=torch.int64),
    "floor divide": lambda t: torch.div(t(2, 3), t(3), rounding_mode="floor"),
    "sub channels-last and contiguous": lambda t: t(2, 3, 4, 5, cl=True) - t(2, 3, 4, 5),
    "gelu channels-last": lambda t: torch.nn.functional.gelu(t(2, 3, 4, 5, cl=True)),
    "where": lambda t: torch.where(t(2, 3, dtype=torch.bool), t(2, 3), t(3)),
    "comparison": lambda t: t(2, 3) > t(3),
    "addmm": lambda t: torch.addmm(t(5), t(3, 4), t(4, 5)),
    "bmm": lambda t: torch.bmm(t(2, 3, 4), t(2, 4, 6)),
    "matmul batched broadcast": lambda t: t(7, 1, 3, 4) @ t(2, 4, 5),
    "linear 3-d": lambda t: torch.nn.functional.linear(t(2, 7, 4), t(6, 4), t(6)),
    "mean over dims": lambda t: t(2, 3, 4).mean((0, 2), keepdim=True),
    "sum of integers": lambda t: t(2, 3, dtype=torch.int32).sum(),
    "max pool with indices": lambda t: torch.nn.functional.max_pool2d(t(1, 3, 8, 8), 2, return_indices=True),
    "avg pool channels-last": lambda t: torch.nn.functional.avg_pool2d(t(2, 3, 8, 8, cl=True), 2),
    "layer norm": lambda t: torch.nn.functional.layer_norm(t(2, 5, 8), (8,)),
    "attention": lambda t: torch.nn.functional.scaled_dot_product_attention(t(2, 4, 5, 8), t(2, 4, 6, 8), t(2, 4, 6, 8)),
    "cross entropy": lambda t: torch.nn.functional.cross_entropy(t(4, 10), t(4, dtype=torch.int64, high=10)),
    "in-place add": lambda t: t(2, 3).add_(t(3)),
    # ops whose C++ kernel for every backend is made of ops with meta kernels (_COMPOSITE_ON_META)
    "layer norm of a transposed tensor": lambda t: torch.nn.functional.layer_norm(t(8, 5, 2).transpose(0, 2), (8,), t(8), t(8)),
    "layer norm of bfloat16": lambda t: torch.nn.functional.layer_norm(t(2, 3, 6, dtype=torch.bfloat16), (3, 6)),
    "layer norm of mismatched width": lambda t: torch.nn.functional.layer_norm(t(2, 5, 8), (6,)),
    "group norm of indivisible channels": lambda t: torch.nn.functional.group_norm(t(2, 6, 4), 4),
    "multiply by a Python float": lambda t: torch.ops.aten.mul.Scalar(t(3, 4).T, 0.5),
    "divide integers by a Python int": lambda t: torch.ops.aten.div.Scalar(t(3, 4, dtype=torch.int64), 2),
    "3-d times 2-d matmul (a view of the product)": lambda t: t(2, 3, 4).transpose(0, 1) @ t(4, 5),
    "masked fill": lambda t: t(2, 3, 4).masked_fill(t(3, 1, dtype=torch.bool), float("-inf")),
    "attention with a boolean mask": lambda t: torch.nn.functional.scaled_dot_product_attention(
        t(2, 4, 5, 8), t(2, 4, 6, 8), t(2, 4, 6, 8), attn_mask=t(5, 6, dtype=torch.bool)),
    "zeros like channels-last": lambda t: torch.zeros_like(t(2, 3, 4, 5, cl=True)),
    # where: clamp's C++ meta kernel sizes it (meta_kernels._install_where)
    "where with an expanded mask": lambda t: torch.where(t(1, 1, 5, dtype=torch.bool).expand(2, 3, 5), t(2, 3, 5), t(5)),
    "where channels-last": lambda t: torch.where(t(2, 3, 4, 5, dtype=torch.bool), t(2, 3, 4, 5, cl=True), t(2, 3, 4, 5)),
    "where of bfloat16 and a 0-dim double": lambda t: torch.where(t(3, 4, dtype=torch.bool), t(3, 4, dtype=torch.bfloat16), t(dtype=torch.float64)),
    "where of a transposed value and a Python float": lambda t: torch.where(t(4, 3, dtype=torch.bool), t(3, 4).T, 0.5),
    "where of integers": lambda t: torch.where(t(3, dtype=torch.bool), t(3, dtype=torch.int64), t(1, dtype=torch.int64)),
    "where into a transposed out": lambda t: torch.where(t(2, 3, dtype=torch.bool), t(2, 3), t(3), out=t(3, 2).T),
    "where into an out to resize": lambda t: torch.where(t(2, 3, dtype=torch.bool), t(2, 3), t(3), out=t(0)),
    "where of shapes that do not broadcast": lambda t: torch.where(t(2, 3, dtype=torch.bool), t(4), t(3)),
    "new ones of another dtype": lambda t: t(2, 3).new_ones((4, 2), dtype=torch.int32),
    "relu channels-last": lambda t: torch.relu(t(2, 3, 4, 5, cl=True)),
    "relu of a transposed tensor": lambda t: torch.nn.functional.relu(t(4, 6).T),
    "relu of integers": lambda t: torch.relu(t(3, 4, dtype=torch.int64)),
    "relu in place": lambda t: torch.nn.functional.relu(t(2, 3).T, inplace=True),
    "relu of booleans": lambda t: torch.relu(t(3, dtype=torch.bool)),
    # errors: the message is the user's diagnostic
    "mm of mismatched shapes": lambda t: t(3, 4) @ t(5, 6),
    "add of shapes that do not broadcast": lambda t: t(2, 3) + t(4),
    "in-place add that would need to grow": lambda t: t(3).add_(t(2, 3)),
    "in-place add of floats into integers": lambda t: t(3, dtype=torch.int64).add_(t(3)),
    "bmm of mismatched batches": lambda t: torch.bmm(t(2, 3, 4), t(3, 4, 5)),
}


def _maker(device: str):
    def make(*shape, dtype=torch.float32, cl=False, high=3):
        if dtype == torch.bool:
            tensor = torch.randint(0, 2, shape).to(dtype)
        elif dtype in (torch.int32, torch.int64):
            tensor = torch.randint(1, high, shape).to(dtype)  # no division by zero, class indices < high
        else:
            tensor = torch.randn(shape, dtype=dtype)
        if cl:
            tensor = tensor.to(memory_format=torch.channels_last)
        if device == "meta":
            tensor = torch.empty_strided(tensor.shape, tensor.stride(), dtype=dtype, device="meta")
        return tensor
    return make


def _outcomes(device: str) -> dict:
    torch.manual_seed(0)
    out = {}
    for name, case in CASES.items():
        try:
            result = case(_maker(device))
            leaves = result if isinstance(result, tuple) else (result,)
            out[name] = [(tuple(t.shape), str(t.dtype), t.stride()) for t in leaves]
        except Exception as error:  # noqa: BLE001 - the same error on both devices is the point
            out[name] = (type(error).__name__, str(error))
    return out


def test_outputs_and_errors_on_meta_are_those_of_cpu():
    """In a fork of this process with the C++ kernels back (and batch norm's), every case as on CPU."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        native, meta = pool.apply(_installed_and_outcomes)
    assert native > 0
    cpu = _outcomes("cpu")
    assert sum(isinstance(v, tuple) for v in cpu.values()) == 9  # the error cases do fail on CPU
    assert meta == cpu


def _installed_and_outcomes():
    from torch_lsp.shapes import meta_kernels

    meta_kernels.install()
    return meta_kernels.use_native_kernels(), _outcomes("meta")
