"""Probe hints (analysis/probes.py) read from the parse's node index, in the order a walk of
the tree meets them: the shallower construction site first (the first few are kept), and of two
options with one destination, the one a walk meets last wins."""

from __future__ import annotations

import textwrap

from torch_lsp.analysis.probes import probe_hints
from torch_lsp.analysis.syntax import parse

SOURCE = textwrap.dedent('''
    import argparse
    import torch.nn as nn

    def build(parser):
        def inner():
            parser.add_argument("--width", type=int, default=32)
            return Net(width=64, depth=3)
        parser.add_argument("--depth", type=int, default=2)
        return inner

    class Block(nn.Module):
        def forward(self, x):
            return x

    class Net(nn.Module):
        def __init__(self, width=8, depth=1):
            super().__init__()
            self.blocks = nn.Sequential(*[Block() for _ in range(depth)])

        def forward(self, x):
            return self.blocks(x)

    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--verbose", action="store_true")
    model = Net(16)
''')


def test_sites_options_uses_and_lines_of_each_probed_class():
    hints = {p["class_name"]: (p["line"], p["hints"]) for p in probe_hints(parse(SOURCE), None, {"lr": 0.1})}
    assert set(hints) == {"Block", "Net"}
    line, net = hints["Net"]
    assert SOURCE.splitlines()[line] == "class Net(nn.Module):"
    # Module level first (a walk meets it first), then the one two functions deep.
    assert net["sites"] == [{"args": ["16"], "kwargs": {}}, {"args": [], "kwargs": {"width": "64", "depth": "3"}}]
    # `--width` at module level (16) is met before the one inside `inner` (32): the last wins.
    assert net["argparse"] == {"lr": 0.1, "width": 32, "depth": 2, "verbose": False}
    assert net["uses"] == ["Block"]
    lines = SOURCE.splitlines()
    assert lines[net["forward"][0]].strip() == "return self.blocks(x)" and net["end"] == net["forward"][1]
    assert hints["Block"][1]["sites"] == [{"args": [], "kwargs": {}}] and hints["Block"][1]["uses"] == []
