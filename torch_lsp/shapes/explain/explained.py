"""The result type, the table of codes, and the fallback text (TL200)."""

from __future__ import annotations

from dataclasses import dataclass

SHAPE_RULES: dict[str, tuple[str, str]] = {
    "TL200": (
        "torch-error",
        "torch raised an error no other TL2xx code explains; shown in torch's words.",
    ),
    "TL201": (
        "matmul-size-mismatch",
        "A Linear layer or a matmul/bmm gets operands whose inner sizes differ.",
    ),
    "TL202": (
        "conv-channel-mismatch",
        "A convolution gets a different number of channels than in_channels.",
    ),
    "TL203": (
        "view-size-mismatch",
        "view/reshape asks for a shape that does not hold the input's elements.",
    ),
    "TL204": (
        "cat-size-mismatch",
        "torch.cat/torch.stack gets tensors whose sizes differ.",
    ),
    "TL205": (
        "broadcast-mismatch",
        "An elementwise operation gets operands whose shapes do not broadcast.",
    ),
    "TL206": (
        "norm-size-mismatch",
        "A BatchNorm/LayerNorm/GroupNorm is built for another feature size.",
    ),
    "TL207": (
        "rnn-input-size",
        "An LSTM/GRU/RNN gets input whose width differs from input_size.",
    ),
    "TL208": (
        "embedding-index",
        "An Embedding gets indices out of range or indices that are not integers.",
    ),
    "TL209": (
        "loss-target-shape",
        "A loss gets input and target whose shapes or classes do not fit.",
    ),
    "TL210": (
        "output-too-small",
        "A pooling or convolution window is larger than its input.",
    ),
    "TL211": (
        "module-construction",
        "A layer cannot be built from the arguments given.",
    ),
}


@dataclass(frozen=True)
class Explained:
    code: str
    message: str
    # A suggested fix in words ("build the layer as nn.Linear(256, 120)"); may be empty.
    hint: str = ""


def torch_first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if isinstance(exc, RuntimeError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
