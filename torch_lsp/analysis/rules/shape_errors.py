"""Shape-error codes (TL2xx): reported by the shape engine, registered here as runtime rules so
that they are selected, ignored, suppressed and documented like every static rule.

Pure data, no torch. The engine's explain package (shapes/explain/) produces these codes.
"""

from __future__ import annotations

from torch_lsp.analysis.facts import Severity
from torch_lsp.analysis.rules import runtime_rule

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

_COMMON_FIX = """## Fix
No automatic edit: the right size depends on intent (change the layer or change its input).
The diagnostic's hint names the change that makes the shapes fit."""

SHAPE_RULE_DOCS: dict[str, str] = {
    "TL200": """
## What it does
Reports an error torch raised while the shape engine ran the file that none of the families
below recognises, in torch's own words (its first line), at the line that raised.

## Why is this bad?
The same code raises the same error when you run it.

Errors that only exist because the engine runs on the meta device, which holds no data
(`.item()`, `nonzero()`, boolean masks, `if tensor > 0:`, printing values, moving meta
tensors to the CPU), are never reported as errors: the engine re-runs on CPU, or stops with
a TL299 note.

## Example
```python
torch.einsum("bij,bjk->bik", torch.randn(2, 3, 4), torch.randn(2, 5, 6))
```

## Use instead
```python
torch.einsum("bij,bjk->bik", torch.randn(2, 3, 4), torch.randn(2, 4, 6))
```

## Fix
None automatic.
""",
    "TL201": """
## What it does
Finds `nn.Linear` layers (and `F.linear`, `matmul`/`@`, `mm`, `bmm`, attention) whose input's
last dimension differs from what the weight expects, e.g.
`fc1 (nn.Linear) expects 400 input features but got 256; input shape [8, 256]`.

## Why is this bad?
torch raises `mat1 and mat2 shapes cannot be multiplied` at run time (the shape job, on meta,
gets the same message). Typical causes: `in_features` computed for another image
size, forgetting to flatten, or attention scores computed as `q @ k` instead of
`q @ k.transpose(-2, -1)`.

## Example
```python
self.fc1 = nn.Linear(16 * 4 * 4, 120)  # computed for 28x28 input
...
x = torch.flatten(x, 1)                 # [8, 400] for 32x32 input
x = self.fc1(x)
```

## Use instead
```python
self.fc1 = nn.Linear(16 * 5 * 5, 120)
```

""" + _COMMON_FIX,
    "TL202": """
## What it does
Finds convolutions whose input has a different number of channels than the layer's
`in_channels`, e.g. `conv1 (nn.Conv2d) expects 3 input channels but got 1; input shape
[4, 1, 64, 64]`; also inputs with the wrong number of dimensions.

## Why is this bad?
torch raises at run time (on meta only `Invalid channel dimensions`). The classic case is a
grayscale dataset (1 channel) fed to a model built for RGB, such as torchvision's ResNets.

## Example
```python
model = torchvision.models.resnet18(weights=None, num_classes=10)
logits = model(torch.randn(4, 1, 64, 64))
```

## Use instead
```python
logits = model(torch.randn(4, 1, 64, 64).expand(-1, 3, -1, -1))
```

""" + _COMMON_FIX,
    "TL203": """
## What it does
Finds `view`, `reshape`, `flatten`/`unflatten` calls whose target shape does not hold the
input's element count, e.g. `view(-1, 256) does not fit: 3200 elements of the input
[8, 16, 5, 5] do not divide into groups of 256`; also `view` on non-contiguous tensors.

## Why is this bad?
torch raises `shape '[-1, 256]' is invalid for input of size 3200`. Worse, when the count
happens to divide, a wrong `view(-1, N)` silently mixes samples of the batch.

## Example
```python
x = x.view(-1, 16 * 4 * 4)
```

## Use instead
```python
x = torch.flatten(x, 1)  # or x.view(x.size(0), -1)
```

""" + _COMMON_FIX,
    "TL204": """
## What it does
Finds `torch.cat` / `torch.stack` of tensors whose sizes differ outside the concatenated
dimension, e.g. `torch.cat(dim=1) needs equal sizes outside dim 1, but tensor 0 is
[1, 32, 30, 30] and tensor 1 is [1, 32, 31, 31]`.

## Why is this bad?
torch raises at run time. In a UNet, an odd input size is floored by each pooling and the
upsampled map comes back one pixel smaller than its skip connection.

## Example
```python
x = self.up2(x)
x = self.dec2(torch.cat([x, skip2], dim=1))
```

## Use instead
```python
x = F.interpolate(self.up2(x), size=skip2.shape[2:])
x = self.dec2(torch.cat([x, skip2], dim=1))
```

""" + _COMMON_FIX,
    "TL205": """
## What it does
Finds elementwise operations (`+`, `-`, `*`, `/`, in place or not, `where`, `masked_fill`,
`expand`) whose operands do not broadcast, listing every conflicting dimension, e.g.
`in-place add (+=) cannot broadcast [8, 128, 16, 16] and [8, 64, 32, 32]`.

## Why is this bad?
torch raises at run time. The classic case is a residual block that changes channels or
stride but adds the raw input as its shortcut.

## Example
```python
identity = x
out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
out += identity
```

## Use instead
```python
self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                              nn.BatchNorm2d(out_ch))
...
out += self.shortcut(x)
```

""" + _COMMON_FIX,
    "TL206": """
## What it does
Finds `BatchNorm*`, `LayerNorm` and `GroupNorm` layers built for a different feature count
than their input has, or given input with the wrong number of dimensions, e.g.
`bn1 (nn.BatchNorm1d) expects 128 features (channels) but got 256; input shape [32, 256]`.

## Why is this bad?
torch raises `running_mean should contain 256 elements not 128` at run time.

## Example
```python
self.fc1 = nn.Linear(784, 256)
self.bn1 = nn.BatchNorm1d(128)
```

## Use instead
```python
self.bn1 = nn.BatchNorm1d(256)
```

""" + _COMMON_FIX,
    "TL207": """
## What it does
Finds `nn.LSTM`, `nn.GRU`, `nn.RNN` (and their cells) whose `input_size` differs from the
width of their input, e.g. `lstm (nn.LSTM) expects input_size 128 but got 100 features;
input shape [8, 20, 100]`; also wrong input rank and wrong hidden-state shapes.

## Why is this bad?
torch raises at run time. Usually the embedding width and the LSTM's `input_size` were
written separately and drifted apart.

## Example
```python
self.embedding = nn.Embedding(1000, 100)
self.lstm = nn.LSTM(128, 64, batch_first=True)
```

## Use instead
```python
self.lstm = nn.LSTM(100, 64, batch_first=True)
```

""" + _COMMON_FIX,
    "TL208": """
## What it does
Finds `nn.Embedding` lookups with indices outside `0..num_embeddings-1`, or with
non-integer indices, e.g. `embedding (nn.Embedding) has 1000 rows (valid indices 0..999)
but got index 3900`.

## Why is this bad?
torch raises `index out of range in self` (on GPU, a device-side assert that kills the
process). Index values are data: meta tensors do not have them, so out-of-range indices are
only found when the engine runs on CPU (`execution.device = "cpu"`); float indices are
found on meta too.

## Example
```python
embedding = nn.Embedding(1000, 32)
vectors = embedding(token_ids)  # ids up to 3900
```

## Use instead
```python
embedding = nn.Embedding(vocab_size, 32)  # vocab_size = largest id + 1
```

""" + _COMMON_FIX,
    "TL209": """
## What it does
Finds loss calls whose input and target do not fit: class-index targets with an extra
dimension, batch sizes that differ, targets of another shape for `MSELoss`/`BCELoss`,
float targets for `NLLLoss`, classes out of range (CPU only), e.g.
`criterion (nn.CrossEntropyLoss) expects class-index targets of shape [8] for input [8, 10]
but the target has shape [8, 1]`.

## Why is this bad?
torch raises at run time, usually after the forward pass of the first batch has already
cost time; the fix is almost always a `squeeze`, a `.long()` or the right number of classes.

## Example
```python
labels = torch.randint(0, 10, (8, 1))
loss = criterion(outputs, labels)
```

## Use instead
```python
loss = criterion(outputs, labels.squeeze(1))
```

""" + _COMMON_FIX,
    "TL210": """
## What it does
Finds pooling layers and convolutions whose window is larger than the (padded) feature map
they receive, e.g. `stage5.2 (nn.MaxPool2d) leaves no output: input size 128x1x1 gives
output size 128x0x0`.

## Why is this bad?
torch raises `Output size is too small` or `Kernel size can't be greater than actual input
size`: the network downsamples more often than the input size allows.

## Example
```python
model = DeepCNN()                       # five conv+pool stages
logits = model(torch.randn(16, 1, 28, 28))
```

## Use instead
```python
# fewer stages, padding, a larger input, or nn.AdaptiveAvgPool2d before the classifier
```

""" + _COMMON_FIX,
    "TL211": """
## What it does
Reports layers that cannot be built from the arguments given, at the constructor call, with
the arguments that differ from the defaults, e.g. `nn.MultiheadAttention(embed_dim=100,
num_heads=3) cannot be built: embed_dim must be divisible by num_heads`.

## Why is this bad?
The model cannot even be instantiated; nothing after the constructor runs.

## Example
```python
self.attn = nn.MultiheadAttention(100, 3, batch_first=True)
```

## Use instead
```python
self.attn = nn.MultiheadAttention(96, 3, batch_first=True)
```

## Fix
None automatic.
""",
}


for _code, (_name, _summary) in SHAPE_RULES.items():
    runtime_rule(_code, _name, Severity.ERROR, _summary, SHAPE_RULE_DOCS[_code])
