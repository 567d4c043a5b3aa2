"""A repository's pyproject.toml cannot lift the limits of shape jobs; the user's settings can."""

from pathlib import Path

from torch_lsp.config import cap_project_settings, load_for_path

HOSTILE = """
[tool.torch-lsp.execution]
timeout = 300
memory-mb = 1000000
device = "cuda"

[tool.torch-lsp.training]
runs-dir = "../../.config/autostart"
python = "./tools/not-really-python"
"""


def test_a_project_cannot_lift_the_limits(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(HOSTILE)
    merged = load_for_path(tmp_path / "model.py")
    execution = merged.settings.execution
    assert (execution.timeout, execution.memory_mb, execution.device) == (10.0, 8192, "meta")
    assert merged.settings.training.runs_dir == ".torch-lsp/runs"
    assert merged.settings.training.python is None
    text = "\n".join(merged.warnings)
    for key, cap in (("execution.timeout", "at most 10 seconds"), ("execution.memoryMb", "at most 8192 MiB"),
                     ("execution.device", "`meta` or `cpu`"), ("training.runsDir", "inside the workspace"),
                     ("training.python", "no interpreter")):
        assert f"'{key}'" in text and cap in text


def test_values_within_the_caps_are_kept(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[tool.torch-lsp.execution]\ntimeout = 8\ndevice = "cpu"\n'
                                             '[tool.torch-lsp.training]\nruns-dir = "out/runs"\n')
    merged = load_for_path(tmp_path / "model.py")
    assert merged.warnings == []
    assert (merged.settings.execution.timeout, merged.settings.execution.device) == (8, "cpu")
    assert merged.settings.training.runs_dir == "out/runs"


def test_the_users_own_settings_are_not_capped(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(HOSTILE)
    merged = load_for_path(tmp_path / "model.py", {"execution": {"timeout": 60, "device": "cuda"}})
    assert (merged.settings.execution.timeout, merged.settings.execution.device) == (60, "cuda")


def test_values_of_the_wrong_type_are_left_to_validation():
    table, warnings = cap_project_settings({"execution": {"timeout": "soon", "memoryMb": True}}, "p")
    assert warnings == [] and table == {"execution": {"timeout": "soon", "memoryMb": True}}


def test_a_project_cannot_choose_the_code_its_scripts_load_or_flood_their_argv(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.torch-lsp.shapes]\nargv = [' + ", ".join(['"--x"'] * 65) + ']\n'
        '[tool.torch-lsp.shapes.env]\nLD_PRELOAD = "./hook.so"\nDATA = "small"\n')
    merged = load_for_path(tmp_path / "model.py")
    assert merged.settings.shapes.argv == [] and merged.settings.shapes.env == {}
    text = "\n".join(merged.warnings)
    assert "'shapes.argv'" in text and "at most 64 arguments" in text
    assert "'shapes.env'" in text and "LD_*" in text


def test_ordinary_arguments_and_variables_are_kept(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.torch-lsp.shapes]\nargv = ["--epochs", "1", "--batch-size", "8"]\n'
        '[tool.torch-lsp.shapes.env]\nDATA = "small"\nOMP_NUM_THREADS = "1"\n')
    merged = load_for_path(tmp_path / "model.py")
    assert merged.warnings == []
    assert merged.settings.shapes.argv == ["--epochs", "1", "--batch-size", "8"]
    assert merged.settings.shapes.env == {"DATA": "small", "OMP_NUM_THREADS": "1"}


def test_the_users_own_environment_is_not_capped(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[tool.torch-lsp.shapes.env]\nPYTHONPATH = "src"\n')
    merged = load_for_path(tmp_path / "model.py", {"shapes": {"env": {"PYTHONPATH": "lib"}}})
    assert merged.settings.shapes.env == {"PYTHONPATH": "lib"} and merged.warnings == []
