"""What people read: hover text, inlay labels and the annotated source, from real reports."""

import textwrap

from torch_lsp.analysis.facts import Position
from torch_lsp.shapes import view
from torch_lsp.shapes.report import Note
from tests.shapes.helpers import cpu_run, line_of, shape_of

SOURCE = textwrap.dedent('''
    import torch
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.fc = nn.Linear(6 * 28 * 28, 10)

        def forward(self, x):
            y = self.conv1(x)  # first layer
            return self.fc(y.flatten(1))

    block = Block()
    images = torch.randn(4, 3, 32, 32)
    logits, feats = block(images), block.conv1(images)
    broken = torch.cat([images, logits])
''')


def test_hover_names_calls_and_modules(run_meta):
    report = run_meta(SOURCE)
    lines = SOURCE.splitlines()
    reference = cpu_run(SOURCE.split("broken =")[0])
    conv_shape = ", ".join(map(str, shape_of(reference["feats"])))

    line = line_of(SOURCE, "y = self.conv1(x)")
    text = lines[line]
    # The target shows the value assigned...
    assert f"`y`: `Tensor[{conv_shape}] float32`" in view.hover_text(report, lines, Position(line, text.index("y =")))
    # ...the argument shows the value it had before the line (the forward parameter here)...
    arg = view.hover_text(report, lines, Position(line, text.index("(x)") + 1))
    assert "`x`: `Tensor[4, 3, 32, 32] float32`" in arg
    # ...and the call shows its output with the layer as constructed.
    call = view.hover_text(report, lines, Position(line, text.index("conv1") + 1))
    assert f"Tensor[{conv_shape}] float32" in call and "conv1: Conv2d(3, 6, kernel_size=(5, 5)" in call

    tuple_line = line_of(SOURCE, "logits, feats =")
    assert "Tensor[4, 10] float32" in view.hover_text(report, lines, Position(tuple_line, 0))
    assert tuple(reference["logits"].shape) == (4, 10)


def test_error_is_shown_on_hover_and_as_a_finding(run_meta):
    report = run_meta(SOURCE)
    [finding] = view.findings(report)
    line = line_of(SOURCE, "broken =")
    assert finding.span.start.line == line and finding.code.startswith("TL2")
    assert finding.message in view.hover_text(report, SOURCE.splitlines(), Position(line, 12))


def test_inlay_labels_only_in_range_and_after_the_code(run_meta):
    report = run_meta(SOURCE)
    lines = SOURCE.splitlines()
    line = line_of(SOURCE, "y = self.conv1(x)")
    [label] = view.inlay_labels(report, lines, line, line)
    assert label.position == Position(line, lines[line].index("  # first layer"))
    assert label.label.startswith("Tensor[") and "float32" not in label.label
    both = line_of(SOURCE, "logits, feats =")
    [pair] = view.inlay_labels(report, lines, both, both)
    assert pair.label.startswith("logits: Tensor[4, 10], feats: Tensor[4, 6, 28, 28]")


def test_annotated_source_for_the_cli(run_meta):
    report = run_meta(SOURCE)
    annotated = view.annotate(SOURCE, report).splitlines()
    images_line = annotated[line_of(SOURCE, "images = torch.randn")]
    assert images_line.endswith("# images: Tensor[4, 3, 32, 32] float32")
    error_index = next(i for i, text in enumerate(annotated) if "# ^ error TL2" in text)
    assert annotated[error_index - 1].startswith("broken = torch.cat")


def test_shape_findings_follow_selection_and_suppression(run_meta):
    from torch_lsp.analysis.rules.selection import RuleSelection

    report = run_meta(SOURCE)
    lines = SOURCE.splitlines()
    assert [f.code for f in view.findings(report, lines, RuleSelection())] == [report.errors[0].code]
    assert view.findings(report, lines, RuleSelection(ignore=("TL2",))) == []
    line = line_of(SOURCE, "broken =")
    suppressed = list(lines)
    suppressed[line] += f"  # torch-lsp: ignore[{report.errors[0].code}]"
    assert view.findings(report, suppressed, RuleSelection()) == []


STOPS_EARLY = textwrap.dedent('''
    import argparse
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    x = torch.zeros(2, 3)
''')


def test_every_early_stop_is_a_tl299_note(run_meta):
    report = run_meta(STOPS_EARLY)
    lines = STOPS_EARLY.splitlines()
    [stop] = view.findings(report, lines)
    line = line_of(STOPS_EARLY, "args = parser.parse_args()")
    assert (stop.code, stop.severity.name, stop.span.start.line) == ("TL299", "INFO", line)
    assert stop.span.start.col == 0 and stop.span.end.col == len(lines[line])
    assert "sys.exit" in stop.message
    # A stop that has no line (the worker failed) is still reported, on the first line.
    [failed] = view.findings(type(report)(stopped="the shape worker crashed on this file"), lines)
    assert failed.code == "TL299" and failed.span.start.line == 0
    # ...and it can be ignored or suppressed like any rule.
    from torch_lsp.analysis.rules.selection import RuleSelection

    assert view.findings(report, lines, RuleSelection(ignore=("TL299",))) == []


DATASET = textwrap.dedent('''
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    dataset = TensorDataset(torch.zeros(16, 3, 8, 8), torch.zeros(16))
    loader = DataLoader(dataset, batch_size=4)
    images, labels = next(iter(loader))
    pooled = images.mean(dim=1)
''')


def test_notes_are_printed_by_shapes_and_shown_on_hover(run_meta):
    lines = DATASET.splitlines()
    dataset_line = line_of(DATASET, "dataset = ")
    stand_in = "CIFAR10 replaced by a stand-in (FakeData, 16 images): nothing was downloaded"
    report = run_meta(DATASET)
    report.notes = [Note(stand_in, dataset_line, "stand-in"), Note("sys.argv filled in: --data /tmp/x", None, "argv")]
    annotated = view.annotate(DATASET, report).splitlines()
    # Line N of the output is line N of the file; the notes follow the source, whole-file first.
    assert [line.split("  #")[0].rstrip() for line in annotated[:len(lines)]] == [l.rstrip() for l in lines]
    assert annotated[-2:] == ["# torch-lsp note: sys.argv filled in: --data /tmp/x",
                              f"# torch-lsp note: line {dataset_line + 1}: {stand_in}"]
    # Hover on the dataset line says it; hover on a tensor computed from it says it too.
    assert stand_in in view.hover_text(report, lines, Position(dataset_line, 0))
    pooled_line = line_of(DATASET, "pooled =")
    hover = view.hover_text(report, lines, Position(pooled_line, 1))
    assert "`pooled`: `Tensor[4, 8, 8] float32`" in hover and f"_Note: {stand_in}_" in hover
    assert tuple(cpu_run(DATASET)["pooled"].shape) == (4, 8, 8)
