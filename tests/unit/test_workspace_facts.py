"""The workspace facts' one walk (`_Inside`) finds what a walk of each definition and of each
statement's own expressions finds: the plain definitions, restated here, which the facts used
before they were collected in one pass (a scan of 1,480 files took twice as long). And a
buffer's facts built from the last version's statements (`StatementParts`) are its facts, those
of an edit parsed alone (lines moved below it) included."""

from __future__ import annotations

import ast
import random
import textwrap

import pytest

from tests.conftest import FIXTURES
from torch_lsp.analysis.workspace_facts import StatementParts, _imports_in_walk_order, _Inside, file_facts

TRICKY = textwrap.dedent('''
    import os, torch.nn as nn
    from . import layers

    @register(make_registry())
    class Net(nn.Module, metaclass=pick(meta())):
        size: int = default_size()

        class Inner(nn.Module):
            def forward(self, x):
                return self.f(g(x)), [h(y) for y in x if keep(y)]

        def __init__(self, width=compute_width(), *, depth=lambda: depth_of(nn)):
            super().__init__()
            import math
            self.block = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth())])
            self.head = {key(): value() for key, value in pairs()}

        async def forward(self, x):
            async with lock(x) as held, other() as second:
                try:
                    y = self.block(x) if check(x) else fallback(x)
                except make_error(x) as error:
                    y = handle(error)
                else:
                    y = ok(y)
                finally:
                    cleanup()
            match pattern(y):
                case [first, *_] if guard(first):
                    return first
                case {"key": value}:
                    return value
            while (z := step(y)) is not None:
                y = z
            return f"{fmt(y)!r}", {a(): b(), c(): d()}, call(*args(), **kwargs())

    def factory(model, data=load()):
        def inner():
            from os import path
            return model(data), Net()
        return inner(), [lambda q: q(model)]

    if __name__ == "__main__":
        net = Net()
        for batch in loader(net):
            net(batch).backward()
''')


def _own_calls(statement: ast.stmt) -> list[ast.Call]:
    """The calls of a statement's own expressions, not of its nested bodies or of the headers
    between it and them (`except E as e:`, `case P if guard:`)."""
    todo = [child for name, child in ast.iter_fields(statement)
            if name not in ("body", "orelse", "finalbody", "handlers", "cases")]
    found = []
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, ast.AST) and not isinstance(item, ast.stmt):
            if isinstance(item, ast.Call):
                found.append(item)
            todo.extend(ast.iter_child_nodes(item))
    return found


def _ids(nodes) -> list[int]:
    return sorted(id(node) for node in nodes)


def assert_one_walk_matches(tree: ast.Module) -> None:
    inside = _Inside(tree)
    every = list(ast.walk(tree))
    assert _imports_in_walk_order(tree) == [n for n in every if isinstance(n, (ast.Import, ast.ImportFrom))]
    definitions = [n for n in every if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    assert set(inside.calls) == set(definitions) == set(inside.returns)
    for definition in definitions:
        inner = list(ast.walk(definition))
        assert _ids(inside.calls[definition]) == _ids(n for n in inner if isinstance(n, ast.Call)), definition.name
        assert _ids(inside.returns[definition]) == _ids(n for n in inner if isinstance(n, ast.Return)), definition.name
    for statement in (n for n in every if isinstance(n, ast.stmt)):
        assert _ids(inside.own_calls.get(statement, [])) == _ids(_own_calls(statement)), ast.dump(statement)[:80]


def test_one_walk_finds_every_call_return_and_import_where_separate_walks_do():
    tree = ast.parse(TRICKY)
    assert_one_walk_matches(tree)
    inside = _Inside(tree)
    forward = next(n for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef))
    callees = {ast.unparse(call.func) for call in inside.calls[forward]}
    assert {"lock", "make_error", "handle", "guard", "step", "fmt", "a", "d", "args", "kwargs"} <= callees
    try_statement = next(n for n in ast.walk(forward) if isinstance(n, ast.Try))
    assert try_statement not in inside.own_calls  # `except make_error(x)`: a header, not the try's own


@pytest.mark.parametrize("path", sorted(FIXTURES.rglob("*.py")), ids=lambda p: p.name)
def test_one_walk_matches_on_the_fixtures(path):
    try:
        tree = ast.parse(path.read_text(errors="replace"))
    except SyntaxError:
        pytest.skip("a fixture with a syntax error on purpose")
    assert_one_walk_matches(tree)


def test_facts_of_a_file_read_from_the_one_walk():
    facts = file_facts("/project/pkg/model.py", "pkg.model", TRICKY)
    lines = TRICKY.splitlines()
    assert facts.error is None
    net = facts.classes["pkg.model.Net"]
    assert net.bases == ("torch.nn.Module",) and net.forward_params == ("x",)
    # Everything its body, decorators and nested classes call, from the `except` and `case`
    # headers too; `Inner` is defined there, never called.
    assert {"register", "make_registry", "torch.nn.Sequential", "torch.nn.Linear", "make_error", "guard",
            "handle", "cleanup", "g", "self.f"} <= set(net.builds)
    assert "pkg.model.Net.Inner" not in net.builds
    assert facts.functions["pkg.model.factory"].called_params == (0,)  # `model(data)` in the nested function
    assert facts.functions["pkg.model.factory.inner"].returns == (("model",), ("pkg.model.Net",))
    assert facts.imports["math"] == "math" and facts.imports["path"] == "os.path"  # imports in bodies count
    assert [(call.name, call.line) for call in facts.name_calls] == [("net", lines.index("        net(batch).backward()"))]
    assert ("loader", "net", lines.index("    for batch in loader(net):")) in {
        (passed.function, passed.name, passed.line) for passed in facts.passes}


def _edited(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True) or ["\n"]
    at = rng.randrange(len(lines))
    choice = rng.random()
    if choice < 0.4:  # typing at the end of a line
        lines[at] = lines[at].rstrip("\n") + rng.choice([" ", "a", "(1)", ")"]) + "\n"
    elif choice < 0.75:
        lines.insert(at, rng.choice(["x = 1\n", "import numpy as np\n", "    model = Net()\n", "model(x)\n", "\n",
                                     "def helper():\n    return Net()\n", "    import torch.nn as nn\n", "@decorator\n",
                                     "class Extra(nn.Module):\n    pass\n", "        y = self.fc(x)\n", "if x:\n",
                                     "from other import Net\n", "def model(x):\n    return x\n"]))
    else:
        del lines[at]
    return "".join(lines)


@pytest.mark.parametrize("path", sorted((FIXTURES / "projects").rglob("*.py"))[:12], ids=lambda p: p.name)
def test_a_buffers_facts_from_the_last_versions_statements_are_its_fresh_facts(path):
    """Random edits (typing, new lines and statements, imports, deleted lines, broken syntax):
    the facts built reusing the last version's statements equal those built from scratch."""
    rng = random.Random(path.name)
    text, parts = path.read_text(), StatementParts()
    for _ in range(40):
        text = _edited(text, rng)
        assert file_facts(str(path), "pkg.model", text, parts=parts) == file_facts(str(path), "pkg.model", text)


def test_an_edit_inside_one_function_walks_that_function_alone():
    parts = StatementParts()
    file_facts("/project/pkg/model.py", "pkg.model", TRICKY, parts=parts)
    before = dict(parts.by_statement)
    edited = TRICKY.replace("return model(data), Net()", "return model(data, 2), Net()")
    facts = file_facts("/project/pkg/model.py", "pkg.model", edited, parts=parts)
    kept = [key for key in parts.by_statement if parts.by_statement[key] is before.get(key)]
    assert len(kept) == len(before) - 1  # every statement but `def factory` reused as it was
    assert facts == file_facts("/project/pkg/model.py", "pkg.model", edited)
    # `nn` imported again, from elsewhere: the statements that read `nn` are walked again, the
    # others kept (the `__main__` block reads `Net`, `loader` and `net`, not `nn`).
    before = dict(parts.by_statement)
    rebound = edited + "import mylib.nn as nn\n"
    facts = file_facts("/project/pkg/model.py", "pkg.model", rebound, parts=parts)
    walked = {key[1].split("\n")[0] for key, part in parts.by_statement.items() if part is not before.get(key)}
    assert walked == {"@register(make_registry())", "import mylib.nn as nn"}  # (the first import reads no name)
    assert facts == file_facts("/project/pkg/model.py", "pkg.model", rebound)
    assert "mylib.nn.Module" in facts.classes["pkg.model.Net"].bases


def _body_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.startswith(" ") and line.strip()
            and not line.rstrip().endswith(("\\", ",", "(", "[", "{"))]


def _typed_in_a_body(text: str, rng: random.Random) -> str:
    """An edit that keeps the file's names: a comment typed, a blank line, a new statement or a
    `pass` inside an indented block, a blank line deleted (the edits a buffer sees most)."""
    lines = text.splitlines(keepends=True)
    at = rng.choice(_body_lines(lines))
    indent = lines[at][:len(lines[at]) - len(lines[at].lstrip())]
    choice = rng.random()
    if choice < 0.25:
        lines[at] = lines[at].rstrip("\n") + "  # typed\n"
    elif choice < 0.5:
        lines.insert(at, "\n")
    elif choice < 0.8:
        lines.insert(at, indent + rng.choice(["model = Net()\n", "y = self.fc(x)\n", "out = model(x)\n",
                                              "q = Other(a, b)(x)\n", "pass\n"]))
    elif not lines[at - 1].strip():
        del lines[at - 1]
    return "".join(lines)


class _Parses:
    """The lengths of the texts `ast.parse` was given."""

    def __init__(self, monkeypatch) -> None:
        self.lengths: list[int] = []
        parse = ast.parse

        def recorded(source, *args, **kwargs):
            self.lengths.append(len(source))
            return parse(source, *args, **kwargs)
        monkeypatch.setattr(ast, "parse", recorded)


@pytest.mark.parametrize("path", [p for p in sorted((FIXTURES / "projects").rglob("*.py"))[:12]
                                  if _body_lines(p.read_text().splitlines())], ids=lambda p: p.name)
def test_edits_inside_bodies_parsed_alone_give_the_fresh_facts(path, monkeypatch):
    """Typing inside a body parses the edited statement alone (most of these edits) and moves
    the facts below it; the facts equal those built from scratch, version after version."""
    rng = random.Random(path.name)
    text, parts = path.read_text(), StatementParts()
    file_facts(str(path), "pkg.model", text, parts=parts)
    parses = _Parses(monkeypatch)
    alone = 0
    for _ in range(30):
        text = _typed_in_a_body(text, rng)
        parses.lengths.clear()
        incremental = file_facts(str(path), "pkg.model", text, parts=parts)
        alone += all(length < len(text) for length in parses.lengths)
        assert incremental == file_facts(str(path), "pkg.model", text)
    assert alone >= 10


def test_a_new_line_in_one_function_parses_it_alone_and_moves_what_follows(monkeypatch):
    parts = StatementParts()
    path = "/project/pkg/model.py"
    text = TRICKY.replace("        import math\n", "")  # an import inside a statement: edits there parse the whole file
    before = file_facts(path, "pkg.model", text, parts=parts)
    parses = _Parses(monkeypatch)
    edited = text.replace("            return self.f(g(x))", "            x = x + 1\n            return self.f(g(x))")
    facts = file_facts(path, "pkg.model", edited, parts=parts)
    assert len(parses.lengths) == 1 and parses.lengths[0] < len(edited)  # the class `Net` alone
    assert facts == file_facts(path, "pkg.model", edited)
    assert facts.functions["pkg.model.factory"].line == before.functions["pkg.model.factory"].line + 1
    assert facts.classes["pkg.model.Net"].line == before.classes["pkg.model.Net"].line
    assert facts.classes["pkg.model.Net"].end_line == before.classes["pkg.model.Net"].end_line + 1
    # A name the file defines, edited: the whole file, as its other statements may read it.
    parses.lengths.clear()
    renamed = edited.replace("def factory(", "def make_factory(")
    facts = file_facts(path, "pkg.model", renamed, parts=parts)
    assert parses.lengths[-1] == len(renamed) and facts == file_facts(path, "pkg.model", renamed)
