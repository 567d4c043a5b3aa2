"""Torch functions that need some arguments on the CPU while a job runs on meta (worker side).

The tracer keeps every tensor on the execution device (tracer.py). A few torch functions read
*values* that decide shapes and require them on the CPU: `pack_padded_sequence`'s sequence
lengths (the packed data has sum(lengths) rows). Lengths given as a list or a CPU tensor have
their values, so they stay on the CPU, and so do the packed sequence's batch sizes (recurrent
layers and `pad_packed_sequence` read them): packed shapes are exact on meta. Lengths that are
a meta tensor have no values: torch's error then reads as data-dependent (explain/
data_dependent.py) and the job re-runs on CPU, never a shape error.

Installed in each job's fork (worker.py), after guards and stand-ins, before user code.
"""

from __future__ import annotations

import functools


def install() -> None:
    from torch.nn.utils import rnn

    rnn.pack_padded_sequence = _lengths_on_cpu(rnn.pack_padded_sequence)


def _lengths_on_cpu(real):
    import torch

    from torch_lsp.shapes.tracer import keep_on_cpu, loading_data

    @functools.wraps(real)
    def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
        if isinstance(lengths, torch.Tensor) and lengths.device.type != "cpu":
            return real(input, lengths, batch_first, enforce_sorted)
        with loading_data():  # not retargeted to the job's device: these are values
            lengths = torch.as_tensor(lengths, dtype=torch.int64, device="cpu")
            packed = real(input, lengths, batch_first, enforce_sorted)
        keep_on_cpu(packed.batch_sizes)  # the recurrent layers and pad_packed_sequence read them
        return packed

    return pack_padded_sequence
