import json
import re
import subprocess
import sys

from tests.conftest import FIXTURES, ROOT


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "torch_lsp", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_check_reports_like_ruff_and_exit_status_follows_fail_on():
    # --no-shapes: no shape worker here (check with shapes: tests/shapes/test_cli_shapes.py, slow).
    result = run("check", "--no-shapes", str(FIXTURES / "missing_zero_grad.py"))
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


def test_files_that_cannot_be_analysed_are_errors_not_passes(tmp_path):
    (tmp_path / "broken.py").write_text("import torch\ndef f(:\n")
    (tmp_path / "binary.py").write_bytes(b"\x00\x01\xff\xfe")
    (tmp_path / "nul.py").write_text("x = 1\x00\n")
    result = run("check", "--no-shapes", "broken.py", "binary.py", "nul.py", "missing.py", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "broken.py:2:7: TL001 syntax error: invalid syntax (file not analysed)",
        "binary.py:1:1: TL001 not UTF-8 text (a binary file?) (file not analysed)",
        "nul.py:1:1: TL001 syntax error: binary content (NUL bytes) is not Python source (file not analysed)",
        "missing.py:1:1: TL001 no such file or directory (file not analysed)",
        "Found 4 findings: 4 errors.",
    ]
    assert "Traceback" not in result.stderr and "All checks passed" not in result.stdout
    # Not even `--ignore TL001` or `--fail-on` lets a file that was never read pass.
    ignored = run("check", "--no-shapes", "--ignore", "TL001", "--format", "json", "broken.py", cwd=tmp_path)
    assert ignored.returncode == 1
    [finding] = json.loads(ignored.stdout)
    assert (finding["code"], finding["severity"], finding["line"], finding["column"]) == ("TL001", "error", 2, 7)
    # A folder: every file in it counts.
    folder = run("check", "--no-shapes", ".", cwd=tmp_path)
    assert folder.returncode == 1 and folder.stdout.count("TL001") == 3


def test_all_checks_passed_only_when_every_file_was_analysed(tmp_path):
    (tmp_path / "clean.py").write_text("import torch\n\nx = torch.zeros(2)\n")
    clean = run("check", "--no-shapes", "clean.py", cwd=tmp_path)
    assert clean.returncode == 0 and clean.stdout == "All checks passed.\n"
    (tmp_path / "empty").mkdir()
    nothing = run("check", "--no-shapes", "empty", cwd=tmp_path)
    assert nothing.stdout == "No Python files or notebooks found.\n"


def test_totals_count_findings_by_severity():
    result = run("check", "--no-shapes", "--select", "TL101,TL111", str(FIXTURES / "missing_zero_grad.py"))
    last = result.stdout.splitlines()[-1]
    assert re.fullmatch(r"Found (\d+) findings?: (\d+ warnings?)(, \d+ info)? \(\d+ with a quick fix in the editor\)\.", last), last


def test_version_and_help():
    assert run("--version").stdout.startswith("torch-lsp ")
    for command in ("serve", "check"):
        assert run(command, "--help").returncode == 0


def test_a_rule_that_crashes_makes_the_check_fail_instead_of_passing(tmp_path, monkeypatch, capsys):
    import dataclasses

    from torch_lsp.analysis.rules import load_rules
    from torch_lsp.cli import main

    rules = load_rules()
    code = next(code for code, rule in rules.items() if rule.check is not None)

    def broken(ctx):
        raise RuntimeError("rule bug")

    monkeypatch.setitem(rules, code, dataclasses.replace(rules[code], check=broken))
    monkeypatch.setenv("TORCH_LSP_STRICT_RULES", "0")  # as users run it: the other rules go on
    source = tmp_path / "fine.py"
    source.write_text("import torch\n")
    assert main(["check", "--no-shapes", str(source)]) == 1
    assert f"TL001 rule {code} failed (a torch-lsp bug: please report it) (file not analysed)" in capsys.readouterr().out
