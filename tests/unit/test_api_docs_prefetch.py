"""Which lookups a shape report's prefetch queues (server/api_docs.py), without jedi: the
position of each torch-looking call (jedi infers the name there), each name once."""

from __future__ import annotations

from torch_lsp.server.api_docs import ApiDocs, _imports_key

SOURCE = '''import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return F.relu(self.fc(x)) + F.relu (x.sum(1, keepdim=True))


y = torch.cat([torch.ones(2, 4), torch.zeros(2, 4)], dim=0)
'''


def prefetched(source: str) -> list[tuple[int, int, str, str | None]]:
    docs, asked = ApiDocs(), []
    docs.lookup = lambda source, path, line, col, word: asked.append((line, col, word, _imports_key(source)))
    docs.prefetch(source, "/w/net.py")
    return asked


def test_each_dotted_call_is_looked_up_once_at_its_own_position():
    asked = prefetched(SOURCE)
    assert [word for *_, word, _ in asked] == ["nn.Linear", "F.relu", "x.sum", "torch.cat", "torch.ones",
                                                     "torch.zeros"]
    lines = SOURCE.splitlines()
    for line, col, word, _ in asked:  # the cursor on the name's last character, as hover puts it
        assert lines[line][col - len(word) + 1:col + 1] == word
    assert {imports for *_, imports in asked} == {_imports_key(SOURCE)}


def test_the_imports_key_depends_on_the_import_lines_only():
    assert _imports_key(SOURCE) == _imports_key(SOURCE.replace("nn.Linear(4, 2)", "nn.Linear(8, 2)"))
    assert _imports_key(SOURCE) != _imports_key(SOURCE.replace("import torch.nn.functional as F", "from torch.nn import functional as F"))
    assert _imports_key("x = 1\n  import os\nimported = 2\nfromage = 3\n") == _imports_key("import os\n")
