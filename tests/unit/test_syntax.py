from torch_lsp.analysis.syntax import ParseFailure, parse
import ast


def call_names(source: str) -> dict[str, str]:
    parsed = parse(source)
    return {parsed.code(c.func): parsed.qualified_name(c.func) for c in parsed.walk(kind=ast.Call)}


def test_names_resolve_through_every_import_form():
    names = call_names(
        "import torch\nimport torch.optim as optim\nfrom torch import nn\nfrom torch.optim import Adam as A\n"
        "import torch.nn.functional as F\n"
        "torch.optim.SGD(p)\noptim.SGD(p)\nnn.Linear(1, 2)\nA(p)\nF.relu(x)\nNet()\n"
    )
    assert names == {
        "torch.optim.SGD": "torch.optim.SGD", "optim.SGD": "torch.optim.SGD", "nn.Linear": "torch.nn.Linear",
        "A": "torch.optim.Adam", "F.relu": "torch.nn.functional.relu", "Net": "Net",
    }


def test_syntax_errors_and_binary_are_values_not_exceptions():
    assert isinstance(parse("def f(:\n"), ParseFailure)
    assert parse("x = (\n").line == 0
    assert isinstance(parse("a = 1\x00\x01"), ParseFailure)
    assert isinstance(parse("x" * 3_000_000), ParseFailure)


def test_spans_count_code_points_not_bytes():
    parsed = parse("s = 'héllo'; t = len(s)\n")
    call = next(parsed.walk(kind=ast.Call))
    assert parsed.span(call).start.col == "s = 'héllo'; t = ".__len__()
