"""Every shape code is documented in ruff's layout, and docs/rules-shapes.md is generated."""

from pathlib import Path

from torch_lsp.shapes.explain import SHAPE_RULES
from torch_lsp.shapes.explain.rule_docs import SHAPE_RULE_DOCS, render

ROOT = Path(__file__).resolve().parents[2]


def test_every_code_has_a_doc_with_examples():
    assert set(SHAPE_RULE_DOCS) == set(SHAPE_RULES)
    for code, doc in SHAPE_RULE_DOCS.items():
        for section in ("## What it does", "## Why is this bad?", "## Example", "## Use instead",
                        "## Fix"):
            assert section in doc, (code, section)


def test_rules_shapes_md_is_generated():
    assert (ROOT / "docs" / "rules-shapes.md").read_text() == render(), \
        "regenerate: python -m torch_lsp.shapes.explain.rule_docs > docs/rules-shapes.md"
