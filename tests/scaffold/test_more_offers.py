"""The actions of issue 5 items 5-6 as a whole: documented, decided on every cursor move,
reachable from the CLI, and offered together on the seed's training loop."""

from harness import REPO_ROOT, fixture, span_at
from torch_lsp import scaffold
from torch_lsp.analysis.facts import Span
from torch_lsp.analysis.syntax import parse
from torch_lsp.cli import main
from torch_lsp.scaffold import ScaffoldContext

FAMILIES = {"precision", "checkpoints", "reproducibility", "distributed", "augmentation", "pretrained"}


def mine() -> list[scaffold.Action]:
    return [a for a in scaffold.load_actions().values() if a.family in FAMILIES]


def test_every_family_registers_its_actions_and_all_are_documented():
    ids = {a.id for a in mine()}
    assert ids == {"precision.amp", "precision.accumulate", "checkpoint.save_resume", "reproducibility.seed",
                   "distributed.ddp", "data.augment", "pretrained.resnet18", "pretrained.resnet50",
                   "pretrained.efficientnet_b0", "pretrained.mobilenet_v3_small"}
    text = (REPO_ROOT / "docs" / "actions.md").read_text(encoding="utf-8")
    assert not [i for i in ids if f"`{i}`" not in text], "document every action in docs/actions.md"


def test_offers_are_decided_on_every_line():
    """The editor asks on every cursor move: deciding never fails, on any line, and offers
    something inside the training loop and nothing on the module docstring. What it costs per
    line is measured by bench/bench_offers.py (docs/benchmarks.md), not asserted here."""
    for name in ("cifar10_seed.py", "vision_main.py"):
        source = fixture(name)
        offered_per_line = []
        for number in range(len(source.splitlines())):
            ctx = ScaffoldContext(parse(source), Span.of(number, 8, number, 8))
            offered_per_line.append({entry.id for entry in mine() if entry.when(ctx)})
        loop_line = span_at(source, "loss.backward()").start.line
        assert "precision.amp" in offered_per_line[loop_line], name
        assert offered_per_line[0] <= {"reproducibility.seed"}, (name, offered_per_line[0])


def test_the_seed_loop_offers_the_loop_actions():
    seed = fixture("cifar10_seed.py")
    offered = {o.id: o for o in scaffold.offers(seed, span_at(seed, "loss.backward()"))}
    for action in ("precision.amp", "precision.accumulate", "checkpoint.save_resume", "distributed.ddp"):
        assert offered[action].kind == scaffold.REWRITE
    assert offered["reproducibility.seed"].kind == scaffold.SOURCE


def test_cli_applies_an_action_of_these_families(capsys, tmp_path):
    path = tmp_path / "seed.py"
    path.write_text(fixture("cifar10_seed.py"), encoding="utf-8")
    line = fixture("cifar10_seed.py").splitlines().index("        loss.backward()") + 1
    assert main(["actions", str(path), "--line", str(line), "--apply", "precision.amp", "--diff"]) == 0
    assert "+        scaler.scale(loss).backward()" in capsys.readouterr().out
    assert path.read_text(encoding="utf-8") == fixture("cifar10_seed.py")


def test_whatever_is_offered_builds_and_adds_no_finding():
    """On every line of every fixture: an offered action builds, and its result parses and
    makes torch-lsp's rules report nothing new (offering what cannot be built is a bug)."""
    from harness import FIXTURES, SCAFFOLD_FIXTURES, apply_edits, assert_no_new_findings

    built = set()
    for path in sorted([*FIXTURES.glob("*.py"), *SCAFFOLD_FIXTURES.glob("*.py")]):
        source = path.read_text(encoding="utf-8")
        done = set()
        for number, line in enumerate(source.splitlines()):
            column = len(line) - len(line.lstrip())
            span = Span.of(number, column, number, column)
            for offer in scaffold.offers(source, span):
                if scaffold.REGISTRY[offer.id].family not in FAMILIES or offer.id in done:
                    continue
                done.add(offer.id)
                fix = scaffold.build(source, offer.id, span)
                assert fix is not None, f"{offer.id} offered on {path.name}:{number + 1} but builds nothing"
                assert_no_new_findings(source, apply_edits(source, fix.edits))
        built |= done
    assert built == {a.id for a in mine()}
