"""Every console example of README.md and docs/*.md runs and prints what the docs say
(tests/docs_examples.py); and the comparison and --update machinery itself."""

from __future__ import annotations

import re
import textwrap

import pytest

from tests import docs_examples as docs
from tests.docs_examples import output_matches, updated_output

EXAMPLES = [e for e in docs.collect() if not e.skip]


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_console_example_prints_what_the_docs_say(example):
    actual = docs.run_example(example)
    assert all(output_matches(c.expected, out, example.vary) for c, out in zip(example.commands, actual)), (
        f"{docs.diff(example, actual)}\n\nIf the new output is intended: python -m tests.docs_examples --update")


def test_docs_have_examples_of_every_subcommand_that_runs_offline():
    commands = {c.text.split()[1] for e in docs.collect() for c in e.commands if c.text.startswith("torch-lsp ")}
    assert {"check", "shapes", "summary", "runs", "metrics", "train", "actions"} <= commands


def test_ellipsis_stands_for_any_lines():
    assert output_matches(["a", "...", "d"], ["a", "b", "c", "d"], [])
    assert output_matches(["a", "...", "d"], ["a", "d"], [])
    assert output_matches(["...", "c"], ["a", "b", "c"], [])
    assert not output_matches(["a", "...", "d"], ["a", "b", "c"], [])
    assert not output_matches(["a"], ["a", "b"], [])


def test_run_ids_ages_and_vary_patterns_are_compared_loosely():
    documented = ["run 20261127-135616-cifar10_seed-7915  started 3 min ago", "| duration | 12.6 s |"]
    actual = ["run 20261201-010135-cifar10_seed-d2df  started just now", "| duration | 30.2 s |"]
    assert not output_matches(documented, actual, [])
    assert output_matches(documented, actual, [re.compile(r"^\| duration \|")])
    assert not output_matches(["| steps | 160 |"], ["| steps | 20 |"], [re.compile(r"^\| duration \|")])


def test_update_keeps_the_excerpt_and_follows_changed_and_inserted_lines():
    documented = ["...", "    def forward(self, x):  # x: Tensor[8, 3]", "        return x  # x: Tensor[8, 3]",
                  "...", "Parameters: 10"]
    actual = ["import torch", "", "    def forward(self, x):  # x: Tensor[B, 3]", "        y = x",
              "        return x  # x: Tensor[B, 3]", "net = Net()", "Parameters: 10", "device: meta"]
    updated = updated_output(documented, actual, [])
    assert updated == ["...", "    def forward(self, x):  # x: Tensor[B, 3]", "        y = x",
                       "        return x  # x: Tensor[B, 3]", "...", "Parameters: 10", "device: meta"]
    assert output_matches(updated, actual, [])


def test_update_keeps_old_text_of_varying_lines():
    vary = [re.compile(r"^\| duration \|")]
    updated = updated_output(["| status | completed |", "| duration | 12.6 s |"],
                             ["| status | failed |", "| duration | 30.2 s |"], vary)
    assert updated == ["| status | failed |", "| duration | 12.6 s |"]


def test_update_rewrites_only_failing_blocks_in_place(tmp_path):
    page = tmp_path / "page.md"
    original = textwrap.dedent("""\
        Intro.

        <!-- docs-example: vary ^took -->
        ```console
        $ torch-lsp a
        old output
        took 1 s
        $ torch-lsp b
        same
        ```

        ```console
        $ torch-lsp c
        one
        ```
        """)
    page.write_text(original)
    first, second = docs.collect([page])
    assert first.vary and [c.text for c in first.commands] == ["torch-lsp a", "torch-lsp b"]
    docs.update_file(page, [(first, [["new output", "line added", "took 9 s"], ["same"]]),
                            (second, [["two"]])])
    # The changed outputs are rewritten, the varying line keeps its text, the rest stays.
    assert page.read_text() == original.replace("old output\n", "new output\nline added\n").replace("one\n", "two\n")


def test_skip_directive_and_terminal_lines():
    assert docs._terminal_line("epoch 1:  10%|#   | 1/10\repoch 1: 100%|####| 10/10\r") == "epoch 1: 100%|####| 10/10"
    assert docs._terminal_line("bar\r          \rEpoch: 1, Loss: 2.3") == "Epoch: 1, Loss: 2.3"


def test_update_anchors_on_lines_that_gained_an_annotation():
    # A new `# return: ...` comment must not make a nearby short line look more alike.
    documented = ["...", "        x = self.fc3(x)  # x: Tensor[32, 10]", "        return x", "..."]
    actual = ["class Net:", "        x = self.fc3(x)  # x: Tensor[B, 10]", "        return x  # return: Tensor[B, 10]",
              "", "", "transform = Compose(", "    transform=transform,", ")"]
    assert updated_output(documented, actual, []) == [
        "...", "        x = self.fc3(x)  # x: Tensor[B, 10]", "        return x  # return: Tensor[B, 10]", "..."]
