"""TL299: the shape engine's own note when a job hangs (registered like every rule, so that it
is selected, ignored, suppressed and documented the same way). Pure data, no torch."""

from __future__ import annotations

from torch_lsp.analysis.facts import Severity
from torch_lsp.analysis.rules import runtime_rule

runtime_rule("TL299", "shape-analysis-stopped", Severity.INFO,
             "Shape analysis ran out of time at this line; shapes after it are not shown.", """
## What it does
Marks the line where running the file for shapes (see shapes.md) was stopped after
`execution.timeout` seconds, e.g. `shape analysis stopped after 5 s at line 12`. Nothing
after that line has shapes or shape errors.

## Why is this bad?
Usually the code at that line loops forever without a training loop the engine recognises
(those run once), or computes on large inputs with `execution.device = "cpu"`. Either way the
editor cannot show shapes past it.

## Example
```python
while not converged:          # `converged` never changes during analysis
    x = step(x)
```

## Use instead
```python
for _ in range(max_steps):    # bounded, or mark the loop as training (call .backward())
    x = step(x)
```

## Fix
None automatic. Raise `execution.timeout`, or suppress with `# torch-lsp: ignore[TL299]`.
""")
