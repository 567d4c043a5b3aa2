import json
import subprocess
import sys

from tests.conftest import FIXTURES, ROOT


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "torch_lsp", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_check_reports_like_ruff_and_exit_status_follows_fail_on():
    result = run("check", str(FIXTURES / "missing_zero_grad.py"))
    assert result.returncode == 0, result.stderr  # TL101 is a warning; default --fail-on error
    line = next(l for l in result.stdout.splitlines() if "TL101" in l)
    path, lineno, col, rest = line.split(":", 3)
    assert path.endswith("missing_zero_grad.py") and int(lineno) == 25 and int(col) == 9
    assert run("check", "--no-shapes", "--fail-on", "warning", str(FIXTURES / "missing_zero_grad.py")).returncode == 1


def test_check_json_and_select(tmp_path):
    result = run("check", "--no-shapes", "--format", "json", str(FIXTURES / "missing_zero_grad.py"))
    [finding] = [f for f in json.loads(result.stdout) if f["code"] == "TL101"]
    assert finding["line"] == 25 and finding["severity"] == "warning" and finding["fix"]["edits"]
    ignored = run("check", "--no-shapes", "--format", "json", "--ignore", "TL101", str(FIXTURES / "missing_zero_grad.py"))
    assert [f for f in json.loads(ignored.stdout) if f["code"] == "TL101"] == []


def test_check_honours_project_configuration(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.torch-lsp.rules]\nignore = ["TL101"]\n')
    (tmp_path / "train.py").write_text((FIXTURES / "missing_zero_grad.py").read_text())
    result = run("check", "--no-shapes", "--format", "json", "train.py", cwd=tmp_path)
    assert [f for f in json.loads(result.stdout) if f["code"] == "TL101"] == []


def test_check_survives_bad_files(tmp_path):
    (tmp_path / "broken.py").write_text("def f(:\n")
    (tmp_path / "binary.py").write_bytes(b"\x00\x01\xff\xfe")
    result = run("check", str(tmp_path))
    assert "syntax error" in result.stderr or "cannot read" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run("check", "--no-shapes", str(tmp_path / "nope.py"))
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_version_and_help():
    assert run("--version").stdout.startswith("torch-lsp ")
    for command in ("serve", "check"):
        assert run(command, "--help").returncode == 0
