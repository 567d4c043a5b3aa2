"""TL299: the shape engine's own note when a job stops before the end of the file (registered
like every rule, so that it is selected, ignored, suppressed and documented the same way).
Pure data, no torch."""

from __future__ import annotations

from torch_lsp.analysis.facts import Severity
from torch_lsp.analysis.rules import runtime_rule

runtime_rule("TL299", "shape-analysis-stopped", Severity.INFO,
             "Shape analysis stopped early at this line; shapes after it are not shown.", """
## What it does
Marks the line where running the file for shapes (see shapes.md) stopped before the end of
the file, and says why:

- it ran out of time: `shape analysis stopped after 5 s at line 12`;
- the script ended itself with a failure status: `the script called sys.exit(2) at line 40;
  shapes up to there` (argparse's exit on an invalid option, for example);
  `sys.exit(0)` and `sys.exit()` are the script's normal end, not a stop;
- a side effect that analysis never performs: `torch.hub.load (a download) is not run during
  shape analysis (line 8); shapes up to there` (downloads, subprocesses, network);
- an error that is not about tensors: `stopped at line 5: FileNotFoundError: data.csv`;
- a data-dependent operation that could run neither on meta nor on CPU within the timeout;
- the shape worker itself failed (reported on the first line).

Nothing after that line has shapes or shape errors. `torch-lsp check` prints the note and
counts it, so "All checks passed." means every file was analysed to its end.

## Why is this bad?
Shape errors after that line cannot be found: a file that stops early is only partly checked.
Usually the code at that line loops forever without a training loop the engine recognises
(those run once), needs command-line arguments or files that analysis does not have, or
downloads data.

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
None automatic. Raise `execution.timeout`, set `argv` in `[tool.torch-lsp.shapes]`, or suppress with
`# torch-lsp: ignore[TL299]`.
""")
