"""Which of `torch-lsp train SCRIPT ARGS...`'s arguments are torch-lsp's and which the script's.

torch-lsp's own options are recognised anywhere before `--`; everything else goes to the
script, and everything after `--` goes to the script untouched. An option that both torch-lsp
and the script define (`--max-steps` in both), written after the script and before `--`, is
ambiguous: the command refuses it and says where to put it, rather than guess.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from pathlib import Path


class AmbiguousOption(ValueError):
    pass


@dataclass
class SplitArguments:
    ours: list[str] = field(default_factory=list)  # torch-lsp's options found after the script
    script_args: list[str] = field(default_factory=list)


def option_arity(parser: argparse.ArgumentParser) -> dict[str, int]:
    """{option string: how many values follow it} for the parser's optional arguments."""
    arity = {}
    for action in parser._actions:  # argparse has no public accessor for its actions
        for option in action.option_strings:
            arity[option] = 0 if action.nargs == 0 else 1
    return arity


def tokens_after_script(argv: list[str], ours: dict[str, int]) -> list[str]:
    """What followed SCRIPT in `torch-lsp ... train [OPTIONS] SCRIPT ...`, `--` included (argparse
    drops a `--` that directly follows SCRIPT, which would hide where the script's part starts)."""
    index = argv.index("train") + 1 if "train" in argv else 0
    while index < len(argv):
        token = argv[index]
        if token == "--":  # `train -- SCRIPT ARGS`: all of ARGS are the script's
            return ["--", *argv[index + 2:]]
        name = token.split("=", 1)[0]
        if name in ours:
            index += 1 if "=" in token else 1 + ours[name]
        elif token.startswith("-") and token != "-":
            index += 1
        else:
            return argv[index + 1:]
    return []


def split_script_arguments(tokens: list[str], ours: dict[str, int], script_options: set[str],
                           script: str) -> SplitArguments:
    """Split what followed SCRIPT on the command line (see the module docstring)."""
    split = SplitArguments()
    if "--" in tokens:
        end = tokens.index("--")
        tokens, after = tokens[:end], tokens[end + 1:]
    else:
        after = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        name = token.split("=", 1)[0] if token.startswith("--") else token
        if name not in ours:
            split.script_args.append(token)
            index += 1
            continue
        if name in script_options:
            raise AmbiguousOption(_ambiguity(name, script, tokens[index:index + 1 + ours[name]]))
        taken = 1 if "=" in token else 1 + ours[name]
        split.ours.extend(tokens[index:index + taken])
        index += taken
    split.script_args.extend(after)
    return split


def _ambiguity(option: str, script: str, written: list[str]) -> str:
    name = Path(script).name
    text = shlex.join(written)
    return (f"{option} is an option of both torch-lsp train and {name}; say which one you mean: "
            f"`torch-lsp train {text} {name}` (torch-lsp's) or `torch-lsp train {name} -- {text}` "
            f"({name}'s)")


def script_options_of(script: str) -> set[str]:
    """The options the script's source defines (empty when it cannot be read)."""
    from torch_lsp.analysis.script_options import declared_options

    try:
        source = Path(script).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    return declared_options(source)
