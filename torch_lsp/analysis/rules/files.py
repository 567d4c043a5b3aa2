"""TL001: a file `torch-lsp check` was asked to check but could not analyse (registered like
every rule so that it is documented with the others). Pure data, no torch."""

from __future__ import annotations

from torch_lsp.analysis.facts import Severity
from torch_lsp.analysis.rules import runtime_rule

FILE_NOT_ANALYSED = runtime_rule(
    "TL001", "file-not-analysed", Severity.ERROR,
    "A file given to `torch-lsp check` could not be read or parsed, so nothing in it was checked.", """
## What it does
Reports a file that `torch-lsp check` could not analyse at all: it does not exist, cannot be
read, is not UTF-8 text (a binary file), or is not valid Python (a syntax error, reported at
its line). The finding says which.

## Why is this bad?
Nothing in such a file was checked. A CI job that printed "All checks passed." for it would
pass code that was never looked at, so this finding is an error (exit status 1) and cannot be
switched off with `rules.ignore` or a suppression comment.

In the editor the buffer is always readable, and your Python language server reports syntax
errors; torch-lsp keeps the last good analysis until the file parses again.

## Example
```python
def forward(self, x:
    return self.fc(x)
```

## Use instead
```python
def forward(self, x):
    return self.fc(x)
```

## Fix
Correct the syntax error, or leave the file out of the paths given to `torch-lsp check`.
""")
