"""Emacs: editors/emacs/torch-lsp.el with Debian's eglot in `emacs -Q --batch`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.editors.conftest import (EDITORS, HOVER_SKIP_REASON, MISSING_ZERO_GRAD, POOLED, SERVER_COMMAND, TINY_TRAIN, editor_env,
                                    expected_pooled_shape, hover_available, require, run_editor)

DRIVER = ROOT / "tests" / "editors" / "emacs_driver.el"
ELPA_EGLOT = "/usr/share/emacs/site-lisp/elpa"


def run_emacs(tmp_path, expected_hover: str = "") -> dict:
    emacs = require("emacs", "apt-get install emacs-nox elpa-eglot")
    if not list(Path(ELPA_EGLOT).glob("eglot-*")):
        pytest.skip(f"eglot is not installed under {ELPA_EGLOT} (apt-get install elpa-eglot)")
    output = tmp_path / "emacs-result.json"
    env = editor_env(TORCH_LSP_RESULT=str(output), TORCH_LSP_FIXTURE=str(MISSING_ZERO_GRAD),
                     TORCH_LSP_POOLED=str(POOLED), TORCH_LSP_EXPECTED_HOVER=expected_hover, HOME=str(tmp_path),
                     TORCH_LSP_TRAIN_SCRIPT=str(TINY_TRAIN), TORCH_LSP_RUNS_DIR=str(tmp_path / "runs"))
    run = run_editor([emacs, "-Q", "--batch", "-l", str(DRIVER)], env, timeout=150)
    assert output.exists(), f"emacs wrote no result (exit {run.returncode})"
    result = json.loads(output.read_text())
    assert "error" not in result, result
    return result


@pytest.mark.slow  # a real editor, server and shape worker
def test_eglot_gets_diagnostics_applies_the_quick_fix_and_runs_a_command(tmp_path):
    result = run_emacs(tmp_path)
    print(f"eglot: connected {result['connected_ms']:.0f} ms, TL101 in flymake {result['diagnostics_ms']:.0f} ms "
          "after find-file")
    assert result["server_command"] == SERVER_COMMAND  # torch-lsp.el's eglot registration was used
    [tl101] = [d for d in result["diagnostics"] if "[TL101]" in d["text"]]
    assert tl101["line"] == 24 and tl101["text"].startswith("torch-lsp [TL101]: ")
    assert tl101["region"] == "optimizer.step()"
    original = MISSING_ZERO_GRAD.read_text()
    assert result["fixed_text"] == original.replace(
        "        loss = loss_fn", "        optimizer.zero_grad()\n        loss = loss_fn", 1)
    assert result["server_debounce"] == 50  # torch-lsp-settings reached the server as initializationOptions
    assert result["torch_imported"] is False


@pytest.mark.slow  # a real editor, server and shape worker
def test_emacs_train_and_metrics_commands(tmp_path):
    result = run_emacs(tmp_path)
    if not result.get("train_offered"):
        pytest.skip("the training commands (torch-lsp.train, torch-lsp.metrics) are not on this branch yet")
    assert result["run_status"] == "completed"
    assert f"Run `{result['run_id']}`" in result["metrics_text"] and "tiny_train.py" in result["metrics_text"]


@pytest.mark.slow  # a real editor, server and shape worker
def test_eglot_hover_shows_the_shape(tmp_path):
    if not hover_available():
        pytest.skip(HOVER_SKIP_REASON)
    expected = expected_pooled_shape()
    assert expected in run_emacs(tmp_path, expected)["hover"]


def test_torch_lsp_el_byte_compiles_cleanly(tmp_path):
    emacs = require("emacs", "apt-get install emacs-nox")
    copy = tmp_path / "torch-lsp.el"
    copy.write_text((EDITORS / "emacs" / "torch-lsp.el").read_text())
    run = run_editor([emacs, "-Q", "--batch", "--eval", "(setq byte-compile-error-on-warn t)",
                      "-f", "batch-byte-compile", str(copy)], editor_env(HOME=str(tmp_path)), timeout=60)
    assert run.returncode == 0, run.stderr
