"""Errors that come from running on meta (no data), not from the user's code."""

from __future__ import annotations

import os
import re


# Errors that only mean "meta tensors hold no data"; none of them is the user's mistake.
_DATA_DEPENDENT_TEXT = re.compile(
    "|".join(
        [
            r"cannot be called on meta tensors",
            r"Cannot copy out of meta tensor",
            r"register_meta function for torch\.\w+\(\) raises unimplemented",
            r"attempted to run this operator with Meta tensors",
            r"with arguments from the 'Meta' backend",
            r"meta tensor without output_size",
            r"convert meta device type tensor",
            r"data-dependent",
            r"data dependent",
            r"on device meta is not on the expected device",
            r"is not on the expected device meta",
            r"two devices, \w+:?\d* and meta|two devices, meta and",
            r"unsupported format string passed to Tensor\.__format__",
            r"should be a 1D CPU int64 tensor, but got .*meta",  # pack_padded_sequence's lengths
        ]
    ),
    re.IGNORECASE,
)
_DATA_DEPENDENT_TYPES = {
    "DataDependentOutputException",
    "DynamicOutputShapeException",
    "GuardOnDataDependentSymNode",
    "UnsupportedOperatorException",
}


def is_data_dependent(exc: BaseException) -> bool:
    """True when ``exc`` comes from running on meta rather than from the user's code."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in _DATA_DEPENDENT_TYPES:
            return True
        if _DATA_DEPENDENT_TEXT.search(str(current)):
            return True
        if _optimizer_step_on_meta(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _optimizer_step_on_meta(exc: BaseException) -> bool:
    # Some torch versions raise inside Adam/AdamW.step() on meta parameters with messages that
    # name neither meta nor data; an optimizer step never changes shapes, so it never matters.
    if "meta" not in str(exc).lower() and not isinstance(exc, NotImplementedError):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if f"{os.sep}torch{os.sep}optim{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False
