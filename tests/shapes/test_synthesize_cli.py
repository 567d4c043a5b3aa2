"""`torch-lsp shapes` on classes nothing calls: the printed file says which calls torch-lsp
made and where each input came from; a synthesized call that fails on correct code is a note,
never a shape error or an early stop, and `torch-lsp check` passes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from tests.shapes.test_synthesize import load

pytestmark = pytest.mark.slow  # every test runs the CLI's shape worker (a process that imports torch)
PROJECTS = ROOT / "fixtures" / "projects"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch_lsp", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_the_printed_file_says_the_call_was_synthesized_and_from_what():
    path = PROJECTS / "synth_zoo" / "sequences.py"
    result = cli("shapes", str(path))
    assert result.returncode == 0, result.stderr
    lines = {line.split("#")[0].rstrip(): line for line in result.stdout.splitlines()}
    assert lines["class NormFirst(nn.Module):"].endswith("# torch-lsp: called NormFirst(), synthesized inputs")
    forward = [line for line in result.stdout.splitlines() if "def forward(self, seq):" in line][0]
    assert "seq: Tensor[T, B, 12] float32" in forward and "seq from rnn = GRU(12, 20, …)" in forward
    last = [line for line in result.stdout.splitlines() if "last = out[-1]" in line][0]
    assert last.endswith("# last: Tensor[B, 20] float32")
    model = load(path).SeqFirstGRU().eval()
    for steps, batch in ((5, 2), (9, 3)):  # T and B are free: CPU agrees at two sizes
        with torch.no_grad():
            out, _ = model.rnn(torch.randn(steps, batch, 12))
        assert tuple(out[-1].shape) == (batch, 20)


def test_a_failed_synthesized_call_on_correct_code_is_a_note_not_an_error():
    path = PROJECTS / "synth_misc" / "unguessable.py"
    result = cli("shapes", "--format", "json", str(path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == [] and report["stopped"] is None
    notes: dict[int, list[dict]] = {}
    for note in report["notes"]:  # 1-based, like the text
        notes.setdefault(note["line"], []).append(note)
    text = path.read_text().splitlines()
    for name in ("PerTarget", "Lookup"):
        line = next(i for i, t in enumerate(text, start=1) if t.startswith(f"class {name}"))
        # Information only: the synthesis's own note, and the why-note that folds its reason in.
        assert {n["kind"] for n in notes[line]} <= {"info", "why"}
        assert any(f"no input found for {name}.forward" in n["message"] for n in notes[line])
    # The code is correct: the inputs its callers pass work on CPU.
    module = load(path)
    assert tuple(module.PerTarget()([{"boxes": torch.randn(3, 4)}, {"boxes": torch.randn(1, 4)}]).shape) == (2, 8)
    assert tuple(module.Lookup()(torch.randn(5, 8)).shape) == (2, 4)
    checked = cli("check", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "TL2" not in checked.stdout


def _shapes_json(path) -> dict:
    result = cli("shapes", "--format", "json", str(path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _last(report: dict, name: str) -> dict:
    return [v for v in report["variables"] if v["name"] == name][-1]["values"][-1]


def test_packed_sequences_on_meta_are_exact_and_never_a_shape_error():
    """`pack_padded_sequence` needs its lengths on the CPU: a list of lengths stays there (exact
    shapes on meta), a lengths tensor the script made is data, so the job re-runs on CPU."""
    path = PROJECTS / "synth_misc" / "packed_script.py"
    report = _shapes_json(path)
    assert report["errors"] == [] and report["stopped"] is None
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # the same script on CPU
    for name in ("data", "padded", "h", "again"):
        assert tuple(_last(report, name)["shape"]) == tuple(namespace[name].shape), name


def test_a_synthesized_call_through_packed_sequences_and_cpu_agrees():
    path = PROJECTS / "synth_misc" / "captioner.py"
    report = _shapes_json(path)
    [entry] = report["extras"]["synthesized"]
    assert [i["name"] for i in entry["inputs"]] == ["features", "captions", "lengths"]
    scores = _last(report, "scores")
    assert scores["dims"] == ["B*T", None] and scores["shape"][1] == 60  # None: a number, not a symbol
    model = load(path).CaptionDecoder().eval()
    for batch, steps in ((2, 16), (3, 8)):  # each caption `steps` long: sum(lengths) = B*T rows
        with torch.no_grad():
            out = model(torch.randn(batch, 32), torch.randint(0, 60, (batch, steps)), [steps] * batch)
        assert tuple(out.shape) == (batch * steps, 60)
