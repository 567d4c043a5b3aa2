"""Generate docs/rules.md from the registry: `python -m torch_lsp.analysis.rules.docs`."""

from __future__ import annotations

from torch_lsp.analysis.rules import all_rules

HEADER = """# Rules

Every diagnostic torch-lsp reports has a code. `TL0xx` are about the file itself (it could not
be analysed), `TL1xx` training-code rules (static), `TL2xx` shape errors and notes (found by
running the code on the meta device, see shapes.md), `TL3xx` API and security rules (static).

Select and ignore rules by code or prefix (`rules.select`, `rules.ignore`, see
configuration.md), override a severity with `rules.severity`, or suppress one line with a
comment: `# torch-lsp: ignore[TL101]` (several codes: `ignore[TL101, TL103]`; all:
`# torch-lsp: ignore`). The comment goes on the line where the diagnostic starts.

This file is generated from the rules' docstrings by `python -m torch_lsp.analysis.rules.docs`;
edit the docstrings, not this file.

| Code | Name | Default severity | Fix | On by default | Summary |
| --- | --- | --- | --- | --- | --- |
"""


def render() -> str:
    rules = all_rules()
    parts = [HEADER]
    for rule in rules:
        parts.append(f"| [{rule.code}](#{rule.code.lower()}) | {rule.name} | {rule.severity.name.lower()} | "
                     f"{'yes' if rule.fixable else ''} | {'yes' if rule.default_enabled else 'no'} | {rule.summary} |\n")
    for rule in rules:
        body = rule.doc.replace("\n## ", "\n### ")
        if body.startswith("## "):
            body = "#" + body
        parts.append(f"\n## {rule.code}\n\n**{rule.name}** · {rule.severity.name.lower()}"
                     f"{' · quick fix' if rule.fixable else ''}{'' if rule.default_enabled else ' · off by default'}\n\n"
                     f"{rule.summary}\n\n{body}\n")
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
