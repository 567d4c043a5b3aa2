"""The JSON schemas of the command line's output, read from where they are documented
(docs/cli.md, a ```json block after `<!-- schema: NAME -->`), so docs and tests cannot differ."""

from __future__ import annotations

import functools
import json
import re

from tests.conftest import ROOT

CLI_DOC = ROOT / "docs" / "cli.md"
_BLOCK = re.compile(r"<!-- schema: (?P<name>[\w-]+) -->\s*```json\n(?P<body>.*?)\n```", re.S)


@functools.cache
def schemas() -> dict[str, dict]:
    return {m["name"]: json.loads(m["body"]) for m in _BLOCK.finditer(CLI_DOC.read_text(encoding="utf-8"))}


def validate(name: str, value) -> None:
    """Raise jsonschema.ValidationError (with the path of the offending value) on a mismatch."""
    import jsonschema

    jsonschema.Draft202012Validator(schemas()[name]).validate(value)
