"""`torch-lsp shapes` / `check` on the fixture projects, run as a user would: from the file's own
folder, with no configuration (the workspace root, the driver and the package context are found
by the command). Shapes asserted here are checked against CPU runs of the same models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, ROOT

pytestmark = pytest.mark.slow  # each command starts a shape worker

PROJECTS = FIXTURES / "projects"


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(PROJECTS / name, target)
    return target


def torch_lsp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VIRTUAL_ENV", None)  # the test's own interpreter runs the shapes
    return subprocess.run([sys.executable, "-m", "torch_lsp", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def annotation(output: str, source_line: str) -> str:
    """The `# ...` shape comment `torch-lsp shapes` put after a source line (without the line's
    FLOPs, which follow it after "; ")."""
    line = next(l for l in output.splitlines() if l.startswith(source_line.rstrip()))
    parts = line[len(source_line.rstrip()):].strip().split("; ")
    return "; ".join(part for part in parts if "FLOP" not in part)


def notes_of(output: str, line: int) -> list[str]:
    """The notes `torch-lsp shapes` printed for a 1-based source line (after the source:
    `# torch-lsp note: line N: ...`)."""
    prefix = f"# torch-lsp note: line {line}: "
    return [l.removeprefix(prefix) for l in output.splitlines() if l.startswith(prefix)]


def test_shapes_of_a_src_layout_model_come_from_its_script(tmp_path):
    project = copy("src_layout", tmp_path)
    folder = project / "src/tabular/models"
    result = torch_lsp("shapes", "mlp.py", cwd=folder)
    assert result.returncode == 0, result.stderr
    text = (folder / "mlp.py").read_text()
    assert result.stdout.splitlines()[: len(text.splitlines())][0] == text.splitlines()[0]
    assert annotation(result.stdout, "        hidden = self.act(self.hidden(rows))") == "# hidden: Tensor[32, 64] float32"
    assert annotation(result.stdout, "        scores = self.out(hidden)") == "# scores: Tensor[32, 3] float32"
    assert "# torch-lsp: shapes from ../../../scripts/fit.py:11" in result.stdout
    import torch

    namespace: dict = {}
    exec(compile(text, "mlp.py", "exec"), namespace)
    model = namespace["MLP"](namespace["MLPConfig"](in_features=12))
    assert [tuple(model(torch.randn(n, 12)).shape) for n in (32, 5)] == [(32, 3), (5, 3)]


def test_script_blockers_on_the_command_line(tmp_path):
    required = copy("required_args", tmp_path)
    result = torch_lsp("shapes", "train.py", cwd=required)
    assert result.returncode == 0, result.stderr
    assert annotation(result.stdout, "    scores = model(batch)") == "# scores: Tensor[16, 5] float32"
    source = (required / "train.py").read_text().splitlines()
    assert source[26].strip() == "return parser.parse_args()"
    [note] = notes_of(result.stdout, 27)
    assert note.startswith("required options were not given; ran with `--data-dir data_dir --features 32 --size small`")

    saved = copy("saved_tensors", tmp_path)
    result = torch_lsp("shapes", "missing_data.py", cwd=saved)
    source = (saved / "missing_data.py").read_text().splitlines()
    assert result.returncode == 0
    assert source[5].startswith("inputs = data[")
    assert notes_of(result.stdout, 6) == [
        "the data of `not_generated_yet.pt` (torch.load at line 5) is not here: shapes stop at line 6"]
    result = torch_lsp("shapes", "fit_saved.py", cwd=saved)
    assert annotation(result.stdout, "predictions = model(inputs)") == "# predictions: Tensor[50, 1] float32"


def test_check_passes_a_ddp_script_and_a_torchvision_script(tmp_path):
    ddp = copy("ddp_script", tmp_path)
    train = copy("model_train", tmp_path)
    (train / "folder.py").write_text(textwrap.dedent("""
        import torch
        from torchvision import datasets, transforms
        data = datasets.ImageFolder("images", transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()]))
        loader = torch.utils.data.DataLoader(data, batch_size=4)
        for images, labels in loader:
            flat = images.flatten(1)
    """))
    result = torch_lsp("check", str(ddp / "train_ddp.py"), str(train / "folder.py"), cwd=tmp_path)
    assert "TL2" not in result.stdout, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_why_a_forward_has_no_shapes_is_a_line_of_the_output(tmp_path):
    project = copy("model_train", tmp_path)
    (project / "pyproject.toml").write_text("[tool.torch-lsp.execution]\nsynthesize = false\n")
    train = project / "train.py"
    train.write_text('words = open("data/corpus.txt").read().split()\n' + train.read_text())
    result = torch_lsp("shapes", "model.py", cwd=project)
    assert result.returncode == 0, result.stderr
    class_line = next(i for i, l in enumerate((project / "model.py").read_text().splitlines(), 1) if "class Net" in l)
    [why] = notes_of(result.stdout, class_line)
    assert why.startswith("Net.forward has no shapes: train.py, which calls it, "
                          "stopped before it ran (stopped at line 1: FileNotFoundError")
    assert why.endswith("state its input with `# torch-lsp: input x=[...]` on its `def forward` line "
                        "(code action on the class: *State the input of Net*).")
    assert "# torch-lsp note: train.py:1: `data/corpus.txt` does not exist here: shapes stop at this line" in result.stdout


def test_a_model_handed_to_a_trainer_class_gets_its_shapes_from_the_loop(tmp_path):
    import json

    project = copy("trainer_class", tmp_path)
    text = torch_lsp("shapes", "models.py", cwd=project)
    assert text.returncode == 0, text.stderr
    assert "# torch-lsp: shapes from trainer.py:17" in text.stdout  # `logits = self.model(tokens)`
    result = torch_lsp("shapes", "--format", "json", "models.py", cwd=project)
    report = json.loads(result.stdout)
    assert report["origin"]["kind"] == "driver" and report["origin"]["path"] == str(project / "trainer.py")
    # The concrete shapes, by name (each name is assigned once in models.py).
    shapes = {v["name"]: [value["shape"] for value in v["values"]] for v in report["variables"]}
    import torch

    namespace: dict = {}
    exec(compile((project / "models.py").read_text(), "models.py", "exec"), namespace)
    model = namespace["TextClassifier"]()
    for batch in (20, 3):  # the loader's batch, and another size
        tokens = torch.randint(0, 1000, (batch, 12))
        states, last = model.encoder(model.embed(tokens))
        cpu = {"states": [list(states.shape)], "last": [list(last.shape)], "logits": [list(model(tokens).shape)]}
        if batch == 20:
            assert {key: shapes[key] for key in cpu} == cpu
        else:
            assert cpu["logits"] == [[3, 4]]
