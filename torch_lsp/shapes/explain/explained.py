"""The result type, the table of codes, and the fallback text (TL200)."""

from __future__ import annotations

from dataclasses import dataclass

SHAPE_RULES: dict[str, tuple[str, str]] = {
    "TL200": ("torch-error", "torch raised an error; shown in torch's own words"),
    "TL201": ("matmul-size-mismatch", "Linear / matmul / bmm operands whose inner sizes differ"),
    "TL202": ("conv-channel-mismatch", "convolution input channels differ from in_channels"),
    "TL203": ("view-size-mismatch", "view / reshape to a shape with a different element count"),
    "TL204": ("cat-size-mismatch", "torch.cat / torch.stack of tensors whose sizes differ"),
    "TL205": ("broadcast-mismatch", "elementwise operands whose shapes do not broadcast"),
    "TL206": ("norm-size-mismatch", "BatchNorm / LayerNorm / GroupNorm built for another size"),
    "TL207": ("rnn-input-size", "LSTM / GRU / RNN input width differs from input_size"),
    "TL208": ("embedding-index", "Embedding indices out of range or not integers"),
    "TL209": ("loss-target-shape", "loss input and target shapes or classes do not fit"),
    "TL210": ("output-too-small", "pooling or convolution window larger than its input"),
    "TL211": ("module-construction", "a layer cannot be built from the arguments given"),
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
