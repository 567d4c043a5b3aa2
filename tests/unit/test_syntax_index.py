"""The fast paths rules lean on agree with the slow ones: ParsedModule.code() slices like
ast.get_source_segment, memoized qualified names stay right, the node index walks in order."""

import ast

from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.syntax import parse

TRICKY = "x = f(\n  'é',\n  b)  # ü\r\ny = 'ü' + g( 1 )\nz = '\x0c' ;w = h(k(1), k(2))\n"


def test_code_matches_ast_get_source_segment():
    parsed = parse(TRICKY)
    spanned = [n for n in ast.walk(parsed.tree) if getattr(n, "end_col_offset", None) is not None]
    assert spanned
    for node in spanned:
        assert parsed.code(node) == ast.get_source_segment(TRICKY, node)


def test_node_index_is_walk_in_source_order():
    parsed = parse(TRICKY)
    for kind in (ast.Call, ast.Name, (ast.Assign, ast.Call)):
        assert list(nodes(parsed, kind)) == list(parsed.walk(kind=kind))


def test_qualified_names_are_stable_when_memoized():
    parsed = parse("import torch.nn as nn\nnn.Linear(1, 1)\nlinear = nn.Linear\n")
    call = next(nodes(parsed, ast.Call))
    assert parsed.qualified_name(call.func) == parsed.qualified_name(call.func) == "torch.nn.Linear"
    assert [parsed.qualified_name(n) for n in nodes(parsed, ast.Attribute)] == ["torch.nn.Linear"] * 2
