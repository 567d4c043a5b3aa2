from torch_lsp.analysis import syntax
from torch_lsp.analysis.syntax import ParseFailure, _ParseCache, parse
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


def test_the_parse_cache_shares_a_version_and_is_bounded_by_the_sources_size():
    cache = _ParseCache(entries=4, characters=10_000)
    small = "x = 1\n"
    assert cache.get(small) is cache.get(small)  # one version, one parse for every feature
    large = ["y = 2\n" * 1_000 + f"z = {i}\n" for i in range(3)]  # ~6,000 characters each
    parsed = [cache.get(text) for text in large]
    assert cache.get(large[-1]) is parsed[-1]  # the newest stays
    assert cache.get(large[0]) is not parsed[0]  # the oldest large one went: 2 would not fit
    assert sum(map(len, cache._parses)) <= 10_000
    huge = "w = 3\n" * 5_000  # larger than the budget alone: still kept, as the only entry
    assert cache.get(huge) is cache.get(huge) and list(cache._parses) == [huge]
    for i in range(6):
        cache.get(f"v = {i}\n")
    assert len(cache._parses) == 4


def test_derived_facts_keep_their_modules_alive_only_within_the_same_bound(monkeypatch):
    monkeypatch.setattr(syntax, "_DERIVED_CHARACTERS", 10_000)
    modules = [syntax.parse_private("y = 2\n" * 1_000 + f"z = {i}\n") for i in range(3)]  # ~6,000 characters each
    for number, module in enumerate(modules):
        syntax.set_derived(module, "test", number)
    assert list(syntax._DERIVED) == [modules[-1]]  # two would not fit: the newest stays
    assert syntax.derived(modules[-1], "test", lambda whole: "rebuilt") == 2
    assert syntax.derived(modules[0], "test", lambda whole: "rebuilt") == "rebuilt"
