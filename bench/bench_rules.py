"""All static rules over a generated 5,000-line training module, in-process.

Usage: PYTHONPATH=. python bench/bench_rules.py [--lines 5000] [--runs 7] [--edits 20]
Prints a markdown table (medians over runs) for docs/benchmarks.md (## Static rules).
Targets (issue 13): every static rule together <= 200 ms CPU cold; an edit inside one
top-level function re-analysed in <= 20 ms (analysis/incremental.py). Each figure is also
given as a ratio to `ast.parse` of the same text, timed in the same run.

The module alternates two blocks of realistic training code with fresh names per copy: one
exercising the API rules (TL107-TL112, TL120, TL3xx), one the loop rules (TL101-TL106, TL110:
Dropout/BatchNorm models, epoch and batch loops, validation, schedulers). Both contain correct
code and a few of the mistakes the rules look for, so every rule does real work.

Each run analyses a text it has never seen (a run counter is appended), so the parse cache and
the per-parse fact caches miss, as they do after a keystroke: the numbers are parse + facts +
every rule, cold. The per-rule split runs each rule on facts that are already built, and the
facts line is what building them costs.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torch_lsp.analysis.check import analyze_source  # noqa: E402
from torch_lsp.analysis.incremental import IncrementalAnalyzer  # noqa: E402
from torch_lsp.analysis.modules import module_facts  # noqa: E402
from torch_lsp.analysis.rules import RuleContext, all_rules  # noqa: E402
from torch_lsp.analysis.rules.selection import RuleSelection  # noqa: E402
from torch_lsp.analysis.syntax import parse  # noqa: E402
from torch_lsp.analysis.training import training_facts  # noqa: E402

HEADER = '''"""Generated benchmark module: many models, loaders and training loops."""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset
'''

# API rules' block: a model, data, a training loop, an evaluation, a checkpoint, AMP, a
# torchvision backbone. {i} makes names unique per block.
API_BLOCK = '''

class Net{i}(nn.Module):
    def __init__(self, features={i} % 7 + 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, features)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = torch.flatten(x, 1)
        x = self.dropout(F.relu(self.fc1(x)))
        return F.softmax(self.fc2(x), dim=1)


def make_loader_{i}(train=True):
    data = TensorDataset(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    return DataLoader(data, batch_size=16, shuffle=train)


def train_{i}(model, loader, optimizer, epochs=2):
    criterion = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(epochs):
        running = 0.0
        for inputs, labels in loader:
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running += loss.item()
        print(epoch, running / len(loader))
    return running


@torch.no_grad()
def evaluate_{i}(model, loader):
    model.eval()
    correct = 0
    for inputs, labels in loader:
        predictions = model(inputs).argmax(dim=1)
        correct += (predictions == labels).sum().item()
    return correct / len(loader.dataset)


def run_{i}():
    model = Net{i}()
    train_loader_{i} = DataLoader(TensorDataset(torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))), batch_size=8)
    val_loader = make_loader_{i}(train=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    scaler = torch.cuda.amp.GradScaler(enabled=False)
    train_{i}(model, train_loader_{i}, optimizer)
    scheduler.step()
    accuracy = evaluate_{i}(model, val_loader)
    logits = model.forward(torch.randn(1, 3, 32, 32))
    for param in model.fc1.parameters():
        param.require_grad = False
    torch.save(model.state_dict(), "checkpoint_{i}.pt")
    state = torch.load("checkpoint_{i}.pt", weights_only=False)
    backbone = torchvision.models.resnet18(pretrained=False)
    return accuracy, logits, state, backbone, scaler
'''

# Loop rules' block (from feat/rules-loops' bench).
LOOP_BLOCK = '''

class Net{i}(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(8 * 30 * 30, 10)

    def forward(self, x):
        x = self.drop(F.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(x, 1))


def make_loaders_{i}():
    data = TensorDataset(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    return DataLoader(data, batch_size=16, shuffle=True), DataLoader(data, batch_size=16)


def make_optimizer_{i}(model):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def train_epoch_{i}(model, loader, optimizer, criterion):
    model.train()
    running_loss = 0.0
    for inputs, labels in loader:
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    return running_loss / len(loader)


def evaluate_{i}(model, loader, criterion):
    model.eval()
    correct, total, val_loss = 0, 0, 0.0
    for inputs, labels in loader:
        outputs = model(inputs)
        val_loss += criterion(outputs, labels).item()
        correct += (outputs.argmax(1) == labels).sum().item()
        total += labels.size(0)
    return val_loss / len(loader), correct / total


def main_{i}(epochs=3):
    train_loader, val_loader = make_loaders_{i}()
    model = Net{i}()
    criterion = nn.CrossEntropyLoss()
    optimizer = make_optimizer_{i}(model)
    scheduler = StepLR(optimizer, step_size=1)
    history = []
    for epoch in range(epochs):
        scheduler.step()
        train_loss = train_epoch_{i}(model, train_loader, optimizer, criterion)
        val_loss, accuracy = evaluate_{i}(model, val_loader, criterion)
        history.append((train_loss, val_loss, accuracy))
        print(f"epoch {{epoch}}: {{train_loss:.3f}} {{val_loss:.3f}} {{accuracy:.2%}}")
    total = 0
    for inputs, labels in train_loader:
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()
        total += loss
    return history
'''


def generate(lines: int) -> str:
    parts = [HEADER]
    i = 0
    count = HEADER.count("\n")
    while count < lines:
        block = (API_BLOCK, LOOP_BLOCK)[i % 2].format(i=i)
        parts.append(block)
        count += block.count("\n")
        i += 1
    parts.append('\n\nif __name__ == "__main__":\n    run_0()\n')
    return "".join(parts)


class Timer:
    """Collects samples per label from one clock (wall or this process's CPU time)."""

    def __init__(self, clock):
        self.clock = clock
        self.samples: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def __call__(self, label: str):
        started = self.clock()
        yield
        self.samples.setdefault(label, []).append(self.clock() - started)

    def median_ms(self, label: str) -> float:
        return statistics.median(self.samples[label]) * 1000


def edited_versions(source: str, edits: int) -> list[tuple[str, str]]:
    """(label, text) pairs of successive versions, each one edit inside one top-level function
    chosen evenly through the file. Not in the first block nor the last two: every block binds
    the same names (`model`, `optimizer`, ...), and the file's binding of a name is its last
    assignment (or, for a parameter, the first helper taking it), so editing those blocks changes
    what `model` is everywhere and re-analyses the whole file, as it must."""
    versions = []
    text = source
    tree = ast.parse(source)
    blocks = sum(1 for n in tree.body if isinstance(n, ast.ClassDef))
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)
                 and 0 < int(n.name.rsplit("_", 1)[1]) < blocks - 2]
    chosen = [functions[round(k * (len(functions) - 1) / max(edits - 1, 1))] for k in range(edits)]
    for number, function in enumerate(chosen):
        lines = text.splitlines(keepends=True)
        name_line = next(i for i, line in enumerate(lines) if line.startswith(f"def {function.name}("))
        body_line = name_line + 1
        if number % 2 == 0:  # an edit within a line: no line moves
            lines[body_line] = lines[body_line].rstrip("\n") + f"  # edit {number}\n"
            label = "edit within a line of one function"
        else:  # a new line: every line below moves
            indent = lines[body_line][: len(lines[body_line]) - len(lines[body_line].lstrip())]
            lines.insert(body_line, f"{indent}step_{number} = {number}\n")
            label = "new line in one function (the rest of the file moves down)"
        text = "".join(lines)
        versions.append((label, text))
    return versions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--edits", type=int, default=20, help="edits per run for the incremental rows")
    args = parser.parse_args()

    source = generate(args.lines)
    rules = [r for r in all_rules() if r.check is not None]
    every_rule = RuleSelection(select=tuple(r.code for r in rules))  # off-by-default ones too

    wall, cpu = Timer(time.perf_counter), Timer(time.process_time)
    counts: dict[str, int] = {}
    for run in range(args.runs):
        text = f"{source}\n# baseline {run}\n"
        with wall("ast.parse"), cpu("ast.parse"):  # the same-run baseline: CPython's own parser
            ast.parse(text)
        text = f"{source}\n# run {run}\n"  # an unseen text: every cache misses
        with wall("total"), cpu("total"):
            analysis = analyze_source(text, "bench.py", every_rule)
        counts = {}
        for finding in analysis.findings:
            counts[finding.code] = counts.get(finding.code, 0) + 1

        analyzer = IncrementalAnalyzer("bench.py", every_rule)
        analyzer.analyze(f"{source}\n# incremental {run}\n")
        for label, version in edited_versions(f"{source}\n# incremental {run}\n", args.edits):
            with wall(label), cpu(label):
                incremental = analyzer.analyze(version)
            if not analyzer.last_was_incremental:
                raise SystemExit(f"{label}: analysed the whole file again")
            if run == 0 and incremental.findings != analyze_source(version, "bench.py", every_rule).findings:
                raise SystemExit(f"{label}: incremental findings differ from the whole file's")

        text = f"{source}\n# parts {run}\n"
        with wall("parse"), cpu("parse"):
            parsed = parse(text)
        with wall("training facts"), cpu("training facts"):
            training_facts(parsed)
        with wall("module facts"), cpu("module facts"):
            module_facts(parsed)
        ctx = RuleContext(parsed, "bench.py")
        for rule in rules:
            with wall(rule.code), cpu(rule.code):
                list(rule.check(ctx))

    line_count = source.count("\n")
    baseline = cpu.median_ms("ast.parse")
    print(f"Generated module: {line_count:,} lines; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}; medians of {args.runs} runs "
          f"({args.edits} edits per run for the incremental rows).\n")
    print("| what | wall ms | CPU ms | CPU / `ast.parse` |")
    print("|---|---:|---:|---:|")
    labels = {"ast.parse": "baseline: `ast.parse` of the same text (CPython's parser, nothing else)",
              "total": "**all static rules, cold: parse + facts + every rule**",
              "parse": "parse (`ast` + one pass for parents, pre-order index, imports)",
              "training facts": "training facts (training.py)", "module facts": "module facts (modules.py)"}
    for key in wall.samples:
        label = labels.get(key, f"rule {key} (facts already built)" if key.startswith("TL") else f"**incremental: {key}**")
        print(f"| {label} | {wall.median_ms(key):.1f} | {cpu.median_ms(key):.1f} | "
              f"{cpu.median_ms(key) / baseline:.2f} |")
    print(f"\nFindings per code: {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
