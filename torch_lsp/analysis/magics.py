"""IPython syntax in a notebook cell -> plain Python, without moving any line.

A cell may hold what only IPython understands: line magics (`%matplotlib inline`), shell
escapes (`!pip install torchvision`), their assignment forms (`files = !ls`), help
(`model?`, `??torch.nn.Linear`) and a cell magic on its first line (`%%time`, `%%bash`). The
analysis and the shape engine read Python, so `neutralise` rewrites each of these lines in place
and leaves every other line exactly as it was:

- at module level a magic becomes a comment of the same length (`#matplotlib inline`); inside
  a block (where a comment would leave the block empty) it becomes `pass`;
- `x = %who_ls` / `x = !ls` keep their assignment (`x = None`, `x = []`), so `x` stays defined;
- `%time <statement>` keeps the statement (IPython runs it in the notebook's namespace): the
  line loses the `%time ` prefix, recorded as a column shift so positions still map back;
- a cell magic whose body is Python (`%%time`, `%%capture out`, ...) keeps its body and only
  comments out its first line; any other cell magic (`%%bash`, `%%writefile`, `%%html`) blanks
  the whole cell.

Only the start of a *logical* line can hold a magic (not inside brackets, a continued line or
a multi-line string): the same rule as IPython's own transformers. Pure text, no IPython import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Cell magics whose body is Python that runs in the notebook's namespace.
PYTHON_BODY_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug", "memit", "px"})

_TARGETS = r"(?:[A-Za-z_][\w.]*\s*,\s*)*[A-Za-z_][\w.]*"
_ASSIGNED_MAGIC = re.compile(rf"^(?P<head>\s*{_TARGETS}\s*=\s*)(?P<kind>[%!])")
_TIME_STATEMENT = re.compile(r"^%time\s+(?=\S)")
_HELP_PREFIX = re.compile(r"^\?{1,2}\S")


@dataclass(frozen=True)
class ColumnShift:
    """On one line, `removed` characters starting at column `at` are gone from the Python."""

    at: int
    removed: int

    def to_python(self, col: int) -> int:
        return col if col < self.at else max(self.at, col - self.removed)

    def to_cell(self, col: int) -> int:
        return col if col < self.at else col + self.removed


@dataclass(frozen=True)
class NeutralisedCell:
    lines: tuple[str, ...]  # the Python lines, as many as the cell has (no line endings)
    shifts: dict[int, ColumnShift] = field(default_factory=dict)  # 0-based line -> shift
    magic_lines: tuple[int, ...] = ()  # lines that held IPython syntax

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def split_lines(text: str) -> list[str]:
    """Lines as Python's tokenizer and LSP count them (\\n, \\r\\n, \\r), endings dropped.

    An empty text is one empty line; a text ending with a newline ends with an empty line.
    """
    return re.split(r"\r\n|\r|\n", text)


def neutralise(cell: str, whole_notebook: bool = False) -> NeutralisedCell:
    """The cell's text with its IPython syntax replaced by Python, line for line.

    `whole_notebook`: the text is a whole notebook sent as one document (jupyterlab-lsp's
    virtual document), where nothing says where cells start: a `%%` line is commented out like
    a line magic (its body stays; a non-Python body then does not parse), and `%time` lines are
    neutralised whole, so that every column stays where the client has it.
    """
    lines = split_lines(cell)
    out = list(lines)
    shifts: dict[int, ColumnShift] = {}
    magic: list[int] = []
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    start = 0
    if first is not None and lines[first].startswith("%%") and not whole_notebook:
        name = lines[first][2:].split(maxsplit=1)[0] if lines[first][2:].strip() else ""
        out[first] = "#" + lines[first][1:]
        magic.append(first)
        if name not in PYTHON_BODY_CELL_MAGICS:  # %%bash, %%writefile, %%html...: not Python
            for index in range(first + 1, len(lines)):
                out[index] = ""
            return NeutralisedCell(tuple(out), {}, tuple(range(first, len(lines))))
        start = first + 1
    scanner = _LogicalLines()
    continued_magic = False
    for index in range(start, len(lines)):
        line = lines[index]
        if continued_magic:  # `%magic a \` continues the magic on the next line
            out[index] = ""
            magic.append(index)
            continued_magic = line.rstrip().endswith("\\")
            continue
        if scanner.at_statement_start:
            replacement = _replace_magic(line, scanner.line_ends_in_help(line), keep_time=not whole_notebook)
            if replacement is not None:
                out[index], shift = replacement
                if shift is not None:
                    shifts[index] = shift
                    scanner.feed(out[index])
                else:
                    magic.append(index)
                    continued_magic = line.rstrip().endswith("\\")
                continue
        scanner.feed(line)
    return NeutralisedCell(tuple(out), shifts, tuple(magic))


def document_as_python(text: str, path: str | None) -> str:
    """A text document's source as Python. A notebook sent as one text document (its path ends
    with `.ipynb`, as jupyterlab-lsp names them) has the IPython syntax the client left in
    neutralised, line for line; any other document is returned as it is."""
    if path and path.endswith(".ipynb"):
        return neutralise(text, whole_notebook=True).text
    return text


def _replace_magic(line: str, ends_in_help: bool, keep_time: bool) -> tuple[str, ColumnShift | None] | None:
    stripped = line.lstrip()
    indent = line[: len(line) - len(stripped)]
    if not stripped:
        return None
    time = _TIME_STATEMENT.match(stripped) if keep_time else None
    if time:
        return indent + stripped[time.end():], ColumnShift(len(indent), time.end())
    if stripped[0] in "%!" or _HELP_PREFIX.match(stripped) or ends_in_help:
        return _inert(line), None
    assigned = _ASSIGNED_MAGIC.match(line)
    if assigned:
        return assigned["head"] + ("[]" if assigned["kind"] == "!" else "None"), None
    return None


def _inert(line: str) -> str:
    """A line that does nothing: a same-length comment at module level, `pass` in a block."""
    stripped = line.lstrip()
    indent = line[: len(line) - len(stripped)]
    if not indent:
        return "#" + line[1:] if line else line
    return indent + "pass"


class _LogicalLines:
    """Tracks, line by line, whether the next line starts a new logical line of Python: not
    inside brackets, a multi-line string or after a backslash continuation."""

    def __init__(self) -> None:
        self.depth = 0
        self.string: str | None = None  # the open string's closing quote(s)
        self.continued = False

    @property
    def at_statement_start(self) -> bool:
        return self.depth == 0 and self.string is None and not self.continued

    def line_ends_in_help(self, line: str) -> bool:
        """`model?` / `model.forward??`: the code (not a comment or string) ends with `?`."""
        code, depth, string, _ = self._scan(line)
        return string is None and code.rstrip().endswith("?")

    def feed(self, line: str) -> None:
        _, self.depth, self.string, self.continued = self._scan(line)

    def _scan(self, line: str) -> tuple[str, int, str | None, bool]:
        """The line's code without its comment, and the state after the line."""
        depth, string = self.depth, self.string
        code_end = len(line)
        i = 0
        while i < len(line):
            ch = line[i]
            if string is not None:
                if ch == "\\":
                    i += 2
                elif line.startswith(string, i):
                    i += len(string)
                    string = None
                else:
                    i += 1
                continue
            if ch == "#":
                code_end = i
                break
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth = max(depth - 1, 0)
            elif ch in "'\"":
                string = ch * 3 if line.startswith(ch * 3, i) else ch
                i += len(string)
                continue
            i += 1
        code = line[:code_end]
        continued = code.endswith("\\")
        if string is not None and len(string) == 1 and not continued:
            string = None  # an unterminated one-quote string ends with its line (a syntax error)
        return code, depth, string, continued and string is None
