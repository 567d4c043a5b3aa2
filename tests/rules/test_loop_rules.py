"""Loop-order and evaluation rules (TL102-TL106, TL110): what tests/rules/test_fixtures.py does
not already check for every fixture.

- every code has a fixture and a complete docstring (docs/rules.md is generated from it);
- each fix leaves exactly the findings of *all* rules that were there before, minus the one
  it fixes (a multiset comparison: a fix must not add a second finding of a code already
  present elsewhere in the file either);
- the training facts these rules stand on (forward/mode events, aliases, per-iteration
  events, autograd contexts, Dropout/BatchNorm models), on small sources.
"""

from __future__ import annotations

import ast
import collections
import textwrap
from pathlib import Path

import pytest

from torch_lsp.analysis.check import analyze_source
from torch_lsp.analysis.evaluation_facts import EvaluationFacts
from torch_lsp.analysis.rules import load_rules
from torch_lsp.analysis.rules._edits import apply_edits
from torch_lsp.analysis.rules.selection import RuleSelection
from torch_lsp.analysis.syntax import ParseFailure, parse
from torch_lsp.analysis.training import EventKind, TrainingFacts

CODES = ("TL102", "TL103", "TL104", "TL105", "TL106", "TL110")
FIXTURES = Path(__file__).parent / "fixtures"


def _fixtures() -> list[Path]:
    return sorted(p for code in CODES for p in FIXTURES.glob(f"{code}_*.py"))


def _all_findings(source: str):
    analysis = analyze_source(source, "fixture.py", RuleSelection(select=("ALL",)))
    assert analysis.ok, analysis.failure
    return analysis.findings


def test_every_code_has_a_runnable_fixture_and_complete_docs():
    rules = load_rules()
    for code in CODES:
        fixtures = list(FIXTURES.glob(f"{code}_*.py"))
        assert fixtures, f"no fixture for {code}"
        assert all(f.read_text().startswith("# runnable") for f in fixtures)
        doc = rules[code].doc
        for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Fix"):
            assert heading in doc, f"{code} docstring lacks {heading!r}"
        assert f"ignore[{code}]" in doc, f"{code} docstring does not say how to suppress it"


@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: p.name)
def test_each_fix_changes_exactly_its_own_finding(path: Path):
    source = path.read_text()
    code = path.name.split("_", 1)[0]
    before = _all_findings(source)
    fixable = [f for f in before if f.code == code and f.fix is not None]
    assert bool(fixable) == load_rules()[code].fixable
    for finding in fixable:
        fixed = apply_edits(source, finding.fix.edits)
        assert not isinstance(parse(fixed), ParseFailure), f"{finding.fix.title!r} leaves invalid Python"
        expected = collections.Counter(f.code for f in before)
        expected[code] -= 1
        after = collections.Counter(f.code for f in _all_findings(fixed))
        assert after == +expected, f"{finding.fix.title!r} (line {finding.span.start.line + 1}): {after} != {expected}"


def _facts(source: str) -> TrainingFacts:
    parsed = parse(textwrap.dedent(source))
    assert not isinstance(parsed, ParseFailure)
    return TrainingFacts(parsed)


def test_forward_and_mode_events_follow_what_names_are_bound_to():
    facts = _facts("""
        import torch.nn as nn
        net = nn.Linear(2, 2)
        other = make_something()
        for epoch in range(2):
            net.train(False)
            net(x)
            other(x)
            net.train()
            net.train(epoch % 2 == 0)
            net.eval()
    """)
    kinds = [(e.kind, e.target) for e in facts.loops[0].events if e.kind is not EventKind.CALL]
    assert kinds == [(EventKind.MODE_EVAL, "net"), (EventKind.FORWARD, "net"), (EventKind.MODE_TRAIN, "net"),
                     (EventKind.MODE_SET, "net"), (EventKind.MODE_EVAL, "net")]


def test_aliases_and_per_iteration_events():
    facts = _facts("""
        import torch
        optimizer = torch.optim.SGD(params, lr=0.1)
        opt = optimizer
        def helper():
            for _ in range(3):
                optimizer.step()
        for epoch in range(2):
            opt.step()
            helper()
            for batch in data:
                optimizer.step()
    """)
    assert facts.canonical("opt") == "optimizer"
    outer = next(loop for loop in facts.loops if loop.node.lineno == 8)
    per_iteration = [facts.once_per_iteration(outer, e) for e in outer.of(EventKind.STEP)]
    assert per_iteration == [True, False, False]


def test_autograd_contexts_and_evaluation_words():
    source = textwrap.dedent("""
        import torch
        from torch import no_grad
        def plain(): model(x)
        @torch.inference_mode()
        def decorated(): model(x)
        def called_under_no_grad(): model(x)
        with no_grad():
            called_under_no_grad()
        with torch.set_grad_enabled(False):
            model(x)
        def validation_epoch(): pass
        def testModel(): pass
        def train_epoch(): pass
    """)
    parsed = parse(source)
    evaluation = EvaluationFacts(TrainingFacts(parsed), "train.py")
    calls = {c.lineno: c for c in parsed.walk(kind=ast.Call) if isinstance(c.func, ast.Name) and c.func.id == "model"}
    assert [evaluation.grad_controlled(calls[n]) for n in sorted(calls)] == [False, True, True, True]
    functions = {f.name: f for f in parsed.walk(kind=ast.FunctionDef)}
    assert evaluation.is_evaluation_function(functions["validation_epoch"])
    assert evaluation.is_evaluation_function(functions["testModel"])
    assert not evaluation.is_evaluation_function(functions["train_epoch"])
    in_pytest = EvaluationFacts(TrainingFacts(parse("def test_shapes(): pass\n")), "tests/test_model.py")
    assert not in_pytest.is_evaluation_function(in_pytest.parsed.tree.body[0])


def test_dropout_and_batchnorm_are_found_through_classes_containers_and_call_sites():
    source = textwrap.dedent("""
        import torch.nn as nn
        import torchvision
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.norm = nn.BatchNorm2d(3)
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.block = Block()
        class Plain(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(2, 2)
        def run(model):
            model(x)
        nested = Net()
        seq = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))
        resnet = torchvision.models.resnet18(weights=None)
        plain = Plain()
        run(nested)
    """)
    parsed = parse(source)
    evaluation = EvaluationFacts(TrainingFacts(parsed))
    names = {n.id: n for n in parsed.walk(kind=ast.Name)}
    assert evaluation.has_mode_dependent_layers(names["nested"])
    assert evaluation.has_mode_dependent_layers(names["seq"])
    assert evaluation.has_mode_dependent_layers(names["resnet"])
    assert not evaluation.has_mode_dependent_layers(names["plain"])
    assert evaluation.has_mode_dependent_layers(names["model"])  # the parameter, from its call site


@pytest.mark.parametrize("path", sorted((Path(__file__).parent / "clean").glob("*.py")), ids=lambda p: p.name)
def test_well_known_correct_training_scripts_are_not_flagged(path: Path):
    """Condensed from pytorch/examples (mnist, dcgan, imagenet) and the transfer-learning
    tutorial: correct code in the shapes people copy; none of these rules may fire."""
    analysis = analyze_source(path.read_text(), str(path), RuleSelection(select=CODES))
    assert analysis.ok
    assert [(f.code, f.span.start.line + 1) for f in analysis.findings] == []


def test_post_processing_layers_are_not_forward_passes():
    source = textwrap.dedent("""
        import torch
        from torch import nn
        model = nn.Sequential(nn.Linear(4, 2))
        softmax = nn.Softmax(dim=1)
        def evaluate(loader):
            model.eval()
            with torch.no_grad():
                outputs = [model(x) for x, _ in loader]
            return [softmax(o).argmax(1) for o in outputs]
        def calibrate(loader):
            model.eval()
            for x, _ in loader:
                model(x)  # observers record ranges; the output is not kept
    """)
    assert analyze_source(source, "eval.py", RuleSelection(select=("TL104",))).findings == []


def _fixed(source: str, code: str) -> tuple[list, str]:
    findings = analyze_source(source, "edge.py", RuleSelection(select=(code,))).findings
    fixes = [f.fix for f in findings if f.fix is not None]
    return findings, apply_edits(source, fixes[0].edits) if fixes else source


def test_no_grad_fix_imports_torch_and_keeps_tab_indentation():
    source = ("from torch import nn\n\nmodel = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))\n\n"
              "def evaluate(loader):\n\tmodel.eval()\n\tfor x in loader:\n\t\tprint(model(x).sum().item())\n")
    findings, fixed = _fixed(source, "TL104")
    assert len(findings) == 1
    assert fixed.startswith("import torch\nfrom torch import nn\n")
    assert "\twith torch.no_grad():\n\t\tfor x in loader:\n\t\t\tprint(model(x)" in fixed
    assert analyze_source(fixed, "edge.py", RuleSelection(select=("TL104",))).findings == []


def test_statements_sharing_a_line_get_a_finding_but_no_fix():
    source = textwrap.dedent("""
        import torch
        model = torch.nn.Linear(2, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in data: loss = model(x).sum(); loss.backward(); optimizer.zero_grad(); optimizer.step()
    """)
    findings = analyze_source(source, "edge.py", RuleSelection(select=("TL102",))).findings
    assert [f.code for f in findings] == ["TL102"] and findings[0].fix is None


def test_unit_tests_calling_a_model_after_eval_are_not_evaluation_code():
    source = textwrap.dedent("""
        import torch
        from torch import nn
        model = nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.5))
        def test_output_shape():
            model.eval()
            assert model(torch.randn(3, 4)).shape == (3, 2)
    """)
    assert analyze_source(source, "tests/test_model.py", RuleSelection(select=("TL104", "TL105"))).findings == []
    assert [f.code for f in analyze_source(source, "predict.py", RuleSelection(select=("TL104",))).findings] == ["TL104"]


def test_events_of_an_inlined_helper_name_the_callers_objects():
    facts = _facts("""
        import torch
        net = torch.nn.Linear(2, 2)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        def train_epoch(model, opt):
            model.train()
            opt.step()
        for epoch in range(2):
            train_epoch(net, opt=optimizer)
    """)
    loop = facts.loops[-1]
    [mode] = loop.of(EventKind.MODE_TRAIN)
    [step] = loop.of(EventKind.STEP)
    assert (mode.target, facts.target_of(mode)) == ("model", "net")
    assert (step.target, facts.target_of(step)) == ("opt", "optimizer")


def test_node_index_agrees_with_a_tree_walk():
    from torch_lsp.analysis.node_index import _SINGLETONS, nodes

    for path in _fixtures():
        parsed = parse(path.read_text())
        assert list(nodes(parsed, ast.AST)) == [n for n in parsed.walk() if not isinstance(n, _SINGLETONS)]
        for scope in parsed.walk(kind=(ast.FunctionDef, ast.For)):
            for kind in ((ast.Call, ast.Assign), ast.Name, ast.stmt):
                assert list(nodes(parsed, kind, scope)) == list(parsed.walk(scope, kind))
