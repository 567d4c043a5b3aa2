"""Static rules on a generated 5,000-line training module: `python bench/bench_rules.py`.

Target (issue 4): every static rule together under 200 ms in-process. The module repeats a
realistic training script (models with Dropout/BatchNorm, helpers, epoch and batch loops,
validation, schedulers, a few of the mistakes the rules look for) with fresh names per copy,
so facts and rules see 5,000 distinct lines. Each run appends a unique comment so the parse
cache never answers: every number is cold. Prints the median (and worst) of: the whole
`analyze_source` call, then its phases measured separately: parse (syntax.py), the shared node
index, the training facts, and the rules themselves (each rule with the facts already built).
Times are CPU time of this process (`time.process_time`): on a shared, loaded machine wall
time measures the neighbours; on an idle machine the two agree.
"""

from __future__ import annotations

import ast
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torch_lsp.analysis.check import analyze_source  # noqa: E402
from torch_lsp.analysis.rules import RuleContext, load_rules  # noqa: E402
from torch_lsp.analysis.rules.selection import RuleSelection  # noqa: E402
from torch_lsp.analysis.node_index import nodes  # noqa: E402
from torch_lsp.analysis.syntax import parse  # noqa: E402

HEADER = """import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset
"""

BLOCK = '''

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


def generate(lines: int = 5000) -> str:
    parts, count, i = [HEADER], HEADER.count("\n"), 0
    while count < lines:
        block = BLOCK.format(i=i)
        parts.append(block)
        count += block.count("\n")
        i += 1
    return "".join(parts)


def main(runs: int = 7) -> None:
    source = generate()
    everything = RuleSelection(select=("ALL",))
    rules = [r for r in load_rules().values() if r.check is not None]
    analyze_source(source + "\n# warm-up\n", "bench.py", everything)  # import rule modules once
    phases: dict[str, list[float]] = {"parse": [], "node index": [], "training facts": [], "all rules": [],
                                      "total (analyze_source)": []}
    per_rule: dict[str, list[float]] = {r.code: [] for r in rules}
    findings = 0
    for run in range(runs):
        text = f"{source}\n# run {run}\n"  # a new text: no cache answers
        start = time.process_time()
        findings = len(analyze_source(text, "bench.py", everything).findings)
        phases["total (analyze_source)"].append(time.process_time() - start)
        text = f"{source}\n# phases {run}\n"
        start = time.process_time()
        parsed = parse(text)
        phases["parse"].append(time.process_time() - start)
        start = time.process_time()
        list(nodes(parsed, ast.Module))
        phases["node index"].append(time.process_time() - start)
        ctx = RuleContext(parsed, "bench.py")
        start = time.process_time()
        ctx.training  # noqa: B018 - the shared facts
        phases["training facts"].append(time.process_time() - start)
        rules_start = time.process_time()
        for rule in rules:
            start = time.process_time()
            list(rule.check(ctx))
            per_rule[rule.code].append(time.process_time() - start)
        phases["all rules"].append(time.process_time() - rules_start)
    print(f"{source.count(chr(10))} lines, {len(rules)} static rules, {findings} findings, median of {runs} cold runs, CPU ms")
    for name, times in phases.items():
        print(f"  {name:24} {statistics.median(times) * 1000:7.1f} ms   (worst {max(times) * 1000:.1f})")
    print("  per rule: " + ", ".join(f"{c} {statistics.median(t) * 1000:.1f}" for c, t in sorted(per_rule.items())))
    print("target (issue 4): all static rules under 200 ms in-process")


if __name__ == "__main__":
    main()
