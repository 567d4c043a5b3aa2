"""Turn torch's exceptions into messages a person understands.

Runs inside the shape worker, where torch is imported; this module itself imports torch only
inside functions, so importing it costs nothing in the server process.

Contract used by the engine (shapes/worker.py, shapes/tracer.py):

- ``track_calls()``: context manager yielding a ``CallTracker``; while active it knows the
  nn.Module calls in progress (global forward pre-hook / always-called forward hook) and the
  torch function call in progress (a ``TorchFunctionMode``). When an exception escapes a
  module or a torch function the tracker remembers, for that exception, which modules were
  running and which call failed, so ``explain`` still sees them after the stack unwound.
- ``explain(exc, tracker) -> Explained(code, message, hint)``: one code per family (TL201..),
  TL200 for anything else (torch's own first line). Messages are built from the shapes the
  tracker saw and from the layers' configuration, never from torch's wording alone, so the
  meta-device text and the CPU text of the same mistake give the same message.
- ``is_data_dependent(exc)``: True for errors that come from meta's inability to compute data
  (``.item()``, ``nonzero``, boolean masks, copying meta tensors out, ...): the engine re-runs
  those on CPU instead of reporting them.
- ``user_span(exc, filename)``: where in the user's file the failing expression is.
- ``SHAPE_RULES``: code -> (name, summary); defined with each code's documentation in
  analysis/rules/shape_errors.py, which registers them in the rule registry.

An engine that already runs its own TorchFunctionMode can skip ours:
``track_calls(function_calls=False)`` and feed ``tracker.record_failure`` from its mode; one
with module hooks of its own, ``module_calls=False`` and ``tracker.enter`` / ``tracker.leave``.

Layout: tracking.py (the tracker), failure.py (what one failure looks like, names,
formatting), layers.py and tensor_ops.py (one translator per family), data_dependent.py,
location.py, explained.py (result type). A new family is a translator
function in layers.py or tensor_ops.py, listed in ``_translators()``, with a code in
SHAPE_RULES and its docs (analysis/rules/shape_errors.py), and a case in tests/shapes/test_explain_families.py.
"""

from __future__ import annotations

from torch_lsp.shapes.explain.data_dependent import is_data_dependent
from torch_lsp.shapes.explain.explained import SHAPE_RULES, Explained, torch_first_line
from torch_lsp.shapes.explain.location import user_span
from torch_lsp.shapes.explain.tracking import (
    CallTracker,
    ModuleCall,
    TorchCall,
    shape_of,
    track_calls,
)

__all__ = [
    "SHAPE_RULES",
    "CallTracker",
    "Explained",
    "ModuleCall",
    "TorchCall",
    "explain",
    "is_data_dependent",
    "shape_of",
    "torch_first_line",
    "track_calls",
    "user_span",
]


def explain(exc: BaseException, tracker: CallTracker | None = None) -> Explained:
    """A clear message for ``exc``; never raises."""
    from torch_lsp.shapes.explain.failure import Failure

    try:
        failure = Failure.build(exc, tracker)
        for translate in _translators():
            explained = translate(failure)
            if explained is not None:
                return explained
    except Exception as bug:  # a bad translation must never hide the user's error
        return Explained("TL200", torch_first_line(exc), f"(explain failed: {bug!r})")
    return Explained("TL200", torch_first_line(exc))


def _translators():
    from torch_lsp.shapes.explain import layers, tensor_ops

    # Order matters: construction and losses first (their errors contain broadcasting or matmul
    # texts too), generic families (view, cat, broadcasting) last.
    return [
        layers.construction,
        tensor_ops.loss_shapes,
        layers.linear_or_matmul,
        layers.conv_channels,
        layers.norm_sizes,
        layers.rnn_input,
        layers.embedding_indices,
        tensor_ops.output_too_small,
        tensor_ops.view_sizes,
        tensor_ops.cat_sizes,
        tensor_ops.broadcasting,
    ]
