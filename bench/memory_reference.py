"""The measured side of torch-lsp's memory estimates: run a training script for real and report the
peak memory its tensors took, as the allocator saw it.

    python bench/memory_reference.py --device cpu FILE    # CPU allocator, through the profiler
    python bench/memory_reference.py --device cuda FILE   # torch.cuda.max_memory_allocated()

Prints one JSON object: {"device", "peak", "baseline"}. `peak` is the most bytes allocated at
once while the script ran, less what was allocated before it started (`baseline`, e.g. CUDA's
cuBLAS workspace of an earlier script in the same process is not there: each call is a fresh
process). On CPU the profiler's allocation events carry the allocator's running total
(`total_allocated`); on CUDA the caching allocator keeps the same figure.

The script runs as `__main__` with the environment it is given (bench/memory_accuracy.py sets the
batch size and step count through environment variables of its generated scripts). Tests run it
in a subprocess: the shape engine's stand-ins (one batch per DataLoader) must not be in the
process that measures a real run.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys


def cpu_peak(path: str, without_data_loading: bool = False) -> dict:
    """Peak of the CPU allocator's running total. `without_data_loading`: less what DataLoader
    iteration allocated and still holds (samples, the collated batch): in a GPU run that is host
    memory; the step's own copy of the batch (`.to(device, copy=True)`) is counted."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        runpy.run_path(path, run_name="__main__")
    allocations = []
    stack = [(node, False) for node in prof.profiler.kineto_results.experimental_event_tree()]
    while stack:
        node, loading = stack.pop()
        loading = loading or "DataLoader" in node.name
        fields = node.extra_fields
        if type(fields).__name__ == "_ExtraFields_Allocation" and str(fields.device) == "cpu":
            allocations.append((node.start_time_ns, fields.ptr, fields.alloc_size, fields.total_allocated, loading))
        stack.extend((child, loading) for child in node.children)
    peak, host, host_pointers = 0, 0, {}
    for _, pointer, size, total, loading in sorted(allocations):
        if without_data_loading:
            if size > 0 and loading:
                host_pointers[pointer] = size
                host += size
            elif size < 0 and pointer in host_pointers:
                host -= host_pointers.pop(pointer)
        peak = max(peak, total - host)
    return {"device": "cpu", "peak": peak, "baseline": 0}


def cuda_peak(path: str) -> dict:
    """The caching allocator's peak; `oom` when the script ran out of GPU memory."""
    import torch

    torch.cuda.init()
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    try:
        runpy.run_path(path, run_name="__main__")
        torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        return {"device": torch.cuda.get_device_name(0), "oom": True, "peak": None, "baseline": baseline}
    return {"device": torch.cuda.get_device_name(0), "peak": torch.cuda.max_memory_allocated() - baseline,
            "baseline": baseline, "reserved": torch.cuda.max_memory_reserved(), "oom": False,
            "total": torch.cuda.get_device_properties(0).total_memory}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--without-data-loading", action="store_true",
                        help="CPU: leave out what DataLoader iteration holds (host memory in a GPU run)")
    parser.add_argument("file")
    args = parser.parse_args(argv)
    sys.argv = [args.file]
    result = cpu_peak(args.file, args.without_data_loading) if args.device == "cpu" else cuda_peak(args.file)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
