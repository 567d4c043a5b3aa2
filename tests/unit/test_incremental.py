"""Incremental analysis gives exactly what analysing the whole file gives, edit after edit.

Random edits (seeded: a failure names its seed and step) to the benchmark's generated training
module and to every rule fixture; after each, the incremental result is compared with
`analyze_source` on the same text: findings (messages, spans, fixes, related locations),
parse failures, and the syntax tree itself, positions included.
"""

from __future__ import annotations

import ast
import importlib.util
import random
from pathlib import Path

import pytest

from torch_lsp.analysis.check import analyze_source
from torch_lsp.analysis.incremental import IncrementalAnalyzer
from torch_lsp.analysis.rules import all_rules
from torch_lsp.analysis.rules.selection import RuleSelection

ROOT = Path(__file__).resolve().parents[2]
EVERY_RULE = RuleSelection(select=tuple(r.code for r in all_rules() if r.check is not None))
FIXTURES = sorted((ROOT / "tests" / "rules" / "fixtures").glob("*.py"))

# Lines a person might add inside a function body: rule-relevant ones first.
NEW_LINES = [
    "optimizer.zero_grad()", "loss.backward()", "optimizer.step()", "scheduler.step()", "model.eval()",
    "model.train()", "total = total + loss", "running += loss", "outputs = model(inputs)",
    "torch.save(model.state_dict(), 'x.pt')", "state = torch.load('x.pt')", "x = torch.randn(2, 3)",
    "loader = DataLoader(data, batch_size=4)", "self.train_loader = DataLoader(data)", "print(x)",
    "with torch.no_grad():", "for batch in loader:", "if epoch > 0:", "return outputs", "pass",
]


def _bench_module(lines: int) -> str:
    spec = importlib.util.spec_from_file_location("bench_rules", ROOT / "bench" / "bench_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate(lines)


def _edit(text: str, rng: random.Random) -> str:
    """One plausible keystroke-sized (or paste-sized) change somewhere in a function body,
    sometimes at the top level (a new function, a deleted one, an edited `def` line)."""
    lines = text.splitlines(keepends=True)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        tree = None
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] if tree else []
    if not functions or rng.random() < 0.05:
        at = rng.randrange(len(lines) + 1)
        return "".join(lines[:at] + ["def added_%d(model, loader):\n    for x in loader:\n        model(x)\n" % at]
                       + lines[at:])
    function = rng.choice(functions)
    first, last = function.lineno - 1, function.end_lineno - 1
    at = rng.randrange(first, last + 1)
    line = lines[at]
    indent = line[: len(line) - len(line.lstrip())] or "    "
    kind = rng.randrange(10)
    if kind == 0:  # a new line, at the indentation of the line it goes before
        lines.insert(at, f"{indent}{rng.choice(NEW_LINES)}\n")
    elif kind == 1 and at != first:  # delete a line
        del lines[at]
    elif kind == 2:  # change a number or a name
        lines[at] = line.replace("0", "2", 1) if "0" in line else line.replace("model", "net", 1)
    elif kind == 3:  # duplicate a line
        lines.insert(at, line)
    elif kind == 4:  # drop or add `.item()`
        lines[at] = line.replace(".item()", "", 1) if ".item()" in line else line.replace("loss", "loss.item()", 1)
    elif kind == 5:  # a blank line or a comment
        lines.insert(at, rng.choice(["\n", f"{indent}# note\n"]))
    elif kind == 6:  # half-typed: a syntax error for a moment
        lines[at] = line.rstrip("\n") + rng.choice(["(", " +", ":", " ="]) + "\n"
    elif kind == 7 and at == first:  # rename the function (its callers lose it)
        lines[at] = line.replace(function.name, function.name + "_v2", 1)
    elif kind == 8:  # delete the whole function
        del lines[first:last + 1]
    else:  # wrap the line in torch.no_grad()
        lines[at] = f"{indent}with torch.no_grad():\n{indent}    {line.lstrip()}"
    return "".join(lines)


def _same_as_whole_file(analyzer: IncrementalAnalyzer, text: str, path: str, where: str) -> bool:
    """Compare; True when the text parses."""
    got = analyzer.analyze(text)
    want = analyze_source(text, path, EVERY_RULE)
    assert got.failure == want.failure, where
    assert got.findings == want.findings, where
    if want.ok:
        assert ast.dump(got.parsed.tree, include_attributes=True) == ast.dump(want.parsed.tree, include_attributes=True), where
    return want.ok


def _edit_and_compare(analyzer: IncrementalAnalyzer, text: str, rng: random.Random, path: str, where: str):
    """One edit, compared; a syntax error is then typed away again (the text stays as it was)."""
    edited = _edit(text, rng)
    parses = _same_as_whole_file(analyzer, edited, path, where)
    return (edited if parses else text), analyzer.last_was_incremental


@pytest.mark.parametrize("seed", [1, 2])
def test_random_edits_of_a_large_training_module(seed):
    text = _bench_module(600)
    analyzer = IncrementalAnalyzer("bench.py", EVERY_RULE)
    _same_as_whole_file(analyzer, text, "bench.py", "cold")
    rng = random.Random(seed)
    reused = 0
    for step in range(25):
        text, incremental = _edit_and_compare(analyzer, text, rng, "bench.py", f"seed {seed}, step {step}")
        reused += incremental
    assert reused >= 6  # most edits stay inside one function: the point of the exercise


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_random_edits_of_each_rule_fixture(fixture):
    text = fixture.read_text()
    analyzer = IncrementalAnalyzer(fixture.name, EVERY_RULE)
    _same_as_whole_file(analyzer, text, fixture.name, "cold")
    rng = random.Random(fixture.name)
    for step in range(8):
        text, _ = _edit_and_compare(analyzer, text, rng, fixture.name, f"{fixture.name}, step {step}")


def test_typing_a_line_character_by_character():
    text = _bench_module(300)
    target = text.index("        running = 0.0\n")
    analyzer = IncrementalAnalyzer("bench.py", EVERY_RULE)
    analyzer.analyze(text)
    typed = "        optimizer.zero_grad()\n"
    for end in range(1, len(typed) + 1):
        version = text[:target] + typed[:end] + ("" if typed[:end].endswith("\n") else "\n") + text[target:]
        _same_as_whole_file(analyzer, version, "bench.py", repr(typed[:end]))


def test_an_edit_inside_a_function_reuses_the_rest_and_an_import_does_not():
    text = _bench_module(300)
    analyzer = IncrementalAnalyzer("bench.py", EVERY_RULE)
    analyzer.analyze(text)
    at = text.index("def train_2(")  # block 0's helpers type the file's `loader` binding: not those
    inside = text[:at] + text[at:].replace("running += loss.item()", "running += loss.item()  # per batch", 1)
    analyzer.analyze(inside)
    assert analyzer.last_was_incremental
    moved = inside.replace("def make_loader_2", "\n\ndef make_loader_2", 1)  # lines added above others
    _same_as_whole_file(analyzer, moved, "bench.py", "lines added")
    assert analyzer.last_was_incremental
    analyzer.analyze(moved.replace("import torchvision\n", "import torchvision\nimport numpy as np\n", 1))
    assert not analyzer.last_was_incremental
