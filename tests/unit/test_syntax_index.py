"""ParsedModule.nodes_of and .code: the fast paths rules use must agree with the slow ones."""

import ast

from torch_lsp.analysis.syntax import parse

TRICKY = "x = f(\n  'é',\n  b)  # ü\r\ny = 'ü' + g( 1 )\nz = '\x0c' ;w = h(k(1), k(2))\n"


def test_code_matches_ast_get_source_segment():
    parsed = parse(TRICKY)
    nodes = [n for n in ast.walk(parsed.tree) if getattr(n, "end_col_offset", None) is not None]
    assert nodes
    for node in nodes:
        assert parsed.code(node) == ast.get_source_segment(TRICKY, node)


def test_nodes_of_is_walk_in_source_order():
    parsed = parse(TRICKY)
    for kind in (ast.Call, ast.Name, (ast.Assign, ast.Call)):
        assert parsed.nodes_of(kind) == list(parsed.walk(kind=kind))


def test_qualified_names_are_stable_when_memoized():
    parsed = parse("import torch.nn as nn\nnn.Linear(1, 1)\n")
    call = parsed.nodes_of(ast.Call)[0]
    assert parsed.qualified_name(call.func) == parsed.qualified_name(call.func) == "torch.nn.Linear"
