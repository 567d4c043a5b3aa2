"""Generated documentation stays in sync with the code it documents."""

import re

from tests.conftest import ROOT
from torch_lsp.analysis.rules.docs import render
from torch_lsp.config import render_settings_table


def test_rules_md_is_generated_from_the_registry():
    assert (ROOT / "docs" / "rules.md").read_text() == render(), \
        "regenerate: python -m torch_lsp.analysis.rules.docs > docs/rules.md"


def test_configuration_md_lists_every_setting():
    text = (ROOT / "docs" / "configuration.md").read_text()
    table = re.search(r"<!-- settings:start -->\n(.*)<!-- settings:end -->", text, re.S).group(1)
    assert table == render_settings_table(), "regenerate the table: python -m torch_lsp.config"
