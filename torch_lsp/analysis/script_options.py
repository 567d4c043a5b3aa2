"""Which command-line options a script defines, read from its source (argparse, click, typer).

`torch-lsp train SCRIPT ARGS...` recognises its own options among ARGS; when the script
defines the same option, which of the two the user meant is ambiguous, and the command refuses
rather than guessing. Pure: source text in, option strings out.
"""

from __future__ import annotations

import ast

from torch_lsp.analysis.syntax import ParsedModule, parse

# Calls whose string arguments starting with "-" are option names.
_OPTION_CALLS = {"add_argument", "option"}  # argparse's parser.add_argument, click.option/typer
_PARSERS = {"argparse.ArgumentParser"}


def declared_options(source: str) -> set[str]:
    """Option strings (`--lr`, `-h`) the script declares; empty when it does not parse."""
    parsed = parse(source)
    if not isinstance(parsed, ParsedModule):
        return set()
    options: set[str] = set()
    for call in parsed.walk(kind=ast.Call):
        name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)
        if name in _OPTION_CALLS:
            options.update(_option_strings(call))
        elif parsed.resolves_to(call.func, *_PARSERS) and _adds_help(call):
            options.update({"-h", "--help"})
    return options


def _option_strings(call: ast.Call) -> set[str]:
    found = set()
    for arg in call.args:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("-"):
            # click accepts "--flag/--no-flag" in one string
            found.update(part.strip() for part in arg.value.split("/") if part.strip().startswith("-"))
    return found


def _adds_help(call: ast.Call) -> bool:
    for keyword in call.keywords:
        if keyword.arg == "add_help" and isinstance(keyword.value, ast.Constant):
            return bool(keyword.value.value)
    return True
