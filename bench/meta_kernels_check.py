"""Meta against CPU over torch's OpInfo samples, with torch's Python meta kernels and with its C++
ones back (shapes/meta_kernels.use_native_kernels): which samples agree, before and after.

    python bench/meta_kernels_check.py [--dtypes float32,int64,bfloat16,bool] [--samples 4]

Needs torch's test database (`torch.testing._internal`, which imports `expecttest`: `pip install
expecttest` in the interpreter that runs this; torch-lsp itself does not need it). Every OpInfo
sample is run on CPU and, as meta tensors of the same shapes, strides and dtypes, on meta; the
function variant and the in-place one. A sample *agrees* when both give tensors of the same
shapes, dtypes and strides, or both raise the same message. Each mode runs in its own
interpreter (the change lasts for the process). Prints a markdown table and every sample that
agreed before and does not after: those are what `_PYTHON_KERNEL_KEPT` is for.
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_samples(mode: str, dtypes: list[str], per_op: int) -> dict:
    warnings.filterwarnings("ignore")
    import torch
    from torch.testing._internal.common_methods_invocations import op_db
    from torch.utils._pytree import tree_flatten, tree_map

    if mode == "native":
        sys.path.insert(0, str(ROOT))
        from torch_lsp.shapes import meta_kernels

        meta_kernels.install()

    def on_meta(value):
        if isinstance(value, torch.Tensor):
            return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
        return value

    def outcome(call):
        try:
            leaves, _ = tree_flatten(call())
            return ["ok", [[list(t.shape), str(t.dtype), list(t.stride())] if isinstance(t, torch.Tensor) else None
                           for t in leaves]]
        except TimeoutError:
            raise
        except Exception as error:  # noqa: BLE001 - the error is the outcome
            return ["error", str(error)[:300]]

    def too_long(*_):
        raise TimeoutError

    signal.signal(signal.SIGALRM, too_long)
    results = {}
    for op in op_db:
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            if dtype not in op.supported_dtypes("cpu"):
                continue
            for variant, fn in (("function", op), ("in-place", op.inplace_variant)):
                if fn is None:
                    continue
                try:
                    samples = list(op.sample_inputs("cpu", dtype, requires_grad=False))[:per_op]
                except Exception:  # noqa: BLE001 - a sample generator that needs what is not here
                    continue
                for index, sample in enumerate(samples):
                    first = sample.input.clone() if isinstance(sample.input, torch.Tensor) else sample.input
                    try:
                        meta = tree_map(on_meta, (sample.input, sample.args, sample.kwargs))
                    except Exception:  # noqa: BLE001 - sparse and other layouts meta cannot mirror
                        continue
                    signal.alarm(5)
                    try:
                        cpu = outcome(lambda: fn(first, *sample.args, **sample.kwargs))
                        on_meta_device = outcome(lambda: fn(meta[0], *meta[1], **meta[2]))
                    except TimeoutError:
                        continue
                    finally:
                        signal.alarm(0)
                    results[f"{op.name}.{op.variant_test_name} {dtype_name} {variant} #{index}"] = [cpu, on_meta_device]
    return results


def verdict(cpu, meta) -> str:
    if cpu[0] == "ok" and meta[0] == "ok":
        return "agree" if cpu[1] == meta[1] else "different outputs"
    if cpu[0] == "error" and meta[0] == "error":
        return "agree" if cpu[1] == meta[1] else "both raise, other message"
    return "raises on CPU only" if cpu[0] == "error" else "raises on meta only"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="float32,int64,bfloat16,bool")
    parser.add_argument("--samples", type=int, default=4, help="samples per op, dtype and variant")
    parser.add_argument("--mode", choices=("python", "native"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtypes = args.dtypes.split(",")
    if args.mode:
        Path(args.out).write_text(json.dumps(run_samples(args.mode, dtypes, args.samples)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        outs = {mode: Path(scratch, f"{mode}.json") for mode in ("python", "native")}
        runs = [subprocess.Popen([sys.executable, __file__, "--mode", mode, "--out", str(out), "--dtypes", args.dtypes,
                                  "--samples", str(args.samples)]) for mode, out in outs.items()]
        if any(run.wait() != 0 for run in runs):
            sys.exit("a mode failed")
        before, after = (json.loads(outs[mode].read_text()) for mode in ("python", "native"))
    keys = [key for key in before if key in after]
    counts = {mode: collections.Counter(verdict(*results[key]) for key in keys)
              for mode, results in (("python", before), ("native", after))}
    print(f"{len(keys)} samples ({args.dtypes}; function and in-place variants)\n")
    print("| outcome | torch's Python meta kernels | C++ meta kernels back |\n|---|---:|---:|")
    for outcome in ("agree", "both raise, other message", "different outputs", "raises on meta only", "raises on CPU only"):
        print(f"| {outcome} | {counts['python'][outcome]} | {counts['native'][outcome]} |")
    worse = [key for key in keys if verdict(*before[key]) == "agree" and verdict(*after[key]) != "agree"]
    print(f"\nagreed before, not after: {len(worse)}")
    for key in worse:
        print(f"  {key}: {verdict(*after[key])}: CPU {after[key][0]}, meta {after[key][1]}")


if __name__ == "__main__":
    main()
