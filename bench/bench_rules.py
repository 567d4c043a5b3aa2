"""All static rules over a generated 5,000-line training module, in-process.

Usage: PYTHONPATH=. python bench/bench_rules.py [--lines 5000] [--runs 7]
Prints a markdown table (medians over runs) for docs/benchmarks.md (## Static rules).

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
from torch.utils.data import DataLoader, TensorDataset
'''

# One block of typical training code: a model, data, a training loop, an evaluation, a
# checkpoint. It contains correct code and a few of the mistakes the rules look for, so that
# every rule does real work. {i} makes names unique per block.
BLOCK = '''

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


def generate(lines: int) -> str:
    parts = [HEADER]
    i = 0
    while sum(p.count("\n") for p in parts) < lines:
        parts.append(BLOCK.format(i=i))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    source = generate(args.lines)
    rules = [r for r in all_rules() if r.check is not None]
    every_rule = RuleSelection(select=tuple(r.code for r in rules))  # off-by-default ones too

    wall, cpu = Timer(time.perf_counter), Timer(time.process_time)
    counts: dict[str, int] = {}
    for run in range(args.runs):
        text = f"{source}\n# run {run}\n"  # an unseen text: every cache misses
        with wall("total"), cpu("total"):
            analysis = analyze_source(text, "bench.py", every_rule)
        counts = {}
        for finding in analysis.findings:
            counts[finding.code] = counts.get(finding.code, 0) + 1

        text = f"{source}\n# parts {run}\n"
        with wall("parse"), cpu("parse"):
            parsed = parse(text)
        with wall("node index"), cpu("node index"):
            parsed.nodes_of(ast.Call)
        with wall("training facts"), cpu("training facts"):
            training_facts(parsed)
        with wall("module facts"), cpu("module facts"):
            module_facts(parsed)
        ctx = RuleContext(parsed, "bench.py")
        for rule in rules:
            with wall(rule.code), cpu(rule.code):
                list(rule.check(ctx))

    line_count = source.count("\n")
    print(f"Generated module: {line_count:,} lines; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}; medians of {args.runs} runs.\n")
    print("| what | wall ms | CPU ms |")
    print("|---|---:|---:|")
    labels = {"total": "**all static rules, cold: parse + facts + every rule**", "parse": "parse (`ast`, parents, imports)",
              "node index": "node index by type (syntax.py, shared by rules)",
              "training facts": "training facts (training.py)", "module facts": "module facts (modules.py)"}
    for key in wall.samples:
        label = labels.get(key, f"rule {key} (facts already built)")
        print(f"| {label} | {wall.median_ms(key):.1f} | {cpu.median_ms(key):.1f} |")
    print(f"\nFindings per code: {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
