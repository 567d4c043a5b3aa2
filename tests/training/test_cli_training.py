"""Real short trainings through the CLI, checked against what the scripts compute themselves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from PIL import Image

from tests.json_schemas import validate
from tests.training.helpers import FIXTURES, copy_recorded_runs, last_json, marker_line, run_cli

pytestmark = pytest.mark.slow  # real training runs in subprocesses


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """One CLI training of the synthetic task, shared by the tests that read it."""
    cwd = tmp_path_factory.mktemp("synthetic")
    result = run_cli("train", str(FIXTURES / "train_synthetic.py"), "--json", "--", "--epochs", "3",
                     cwd=cwd)
    return cwd, result


def _script_counts(stdout: str) -> dict[str, float]:
    match = re.search(r"script_steps=(\d+) script_samples=(\d+) script_last_loss=([\d.]+)", stdout)
    assert match, stdout
    return {"steps": int(match[1]), "samples": int(match[2]), "last_loss": float(match[3])}


def test_train_reports_what_the_script_computed(synthetic_run):
    cwd, result = synthetic_run
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    validate("metrics", summary)  # the schema documented in docs/cli.md
    counts = _script_counts(result.stdout)
    assert summary["status"] == "completed" and summary["exit_code"] == 0
    assert summary["steps"] == counts["steps"]
    assert summary["samples"] == counts["samples"]
    assert summary["final_loss"] == pytest.approx(counts["last_loss"], abs=1e-6)
    assert summary["epochs"] == 3 and summary["epochs_total"] == 3
    assert summary["last_lr"] == [0.05]
    assert summary["device"] == "cpu"
    assert summary["steps_per_s"] > 0 and summary["samples_per_s"] > 0
    # Printed "Epoch: 3, Loss: 0.158, val_acc=0.959" pairs became user metrics.
    printed = re.findall(r"Epoch: (\d+), Loss: ([\d.]+), val_acc=([\d.]+)", result.stdout)
    assert summary["metrics"]["loss"]["last"] == pytest.approx(float(printed[-1][1]))
    assert summary["metrics"]["val_acc"]["best"] == pytest.approx(max(float(p[2]) for p in printed))
    assert summary["metrics"]["epoch"]["last"] == 3


def test_loss_decreases_over_the_run(synthetic_run):
    cwd, _ = synthetic_run
    run_dir = next((cwd / ".torch-lsp" / "runs").iterdir())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "step" and r.get("loss") is not None]
    assert len(losses) >= 3
    assert losses[-1] < 0.5 * losses[0]
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == sorted(steps)
    assert [r["kind"] for r in records][0] == "start" and records[-1]["kind"] == "end"


def test_run_store_layout_and_chart(synthetic_run):
    cwd, result = synthetic_run
    run_dir = next((cwd / ".torch-lsp" / "runs").iterdir())
    for name in ("run.json", "metrics.jsonl", "stdout.log", "stderr.log", "summary.json", "chart.png"):
        assert (run_dir / name).is_file(), name
    assert "Epoch: 3" in (run_dir / "stdout.log").read_text()
    with Image.open(run_dir / "chart.png") as image:
        image.verify()
    with Image.open(run_dir / "chart.png") as image:
        assert image.format == "PNG" and image.width >= 600 and image.height >= 200
    assert json.loads((run_dir / "summary.json").read_text())["chart"] == str(run_dir / "chart.png")


def test_not_input_bound_when_data_is_in_memory(synthetic_run):
    _, result = synthetic_run
    summary = last_json(result.stdout)
    assert summary["data_wait_fraction"] < 0.3
    assert summary["input_bound"] is None


def test_runs_and_metrics_read_the_store_back(synthetic_run):
    cwd, result = synthetic_run
    trained = last_json(result.stdout)
    listed = run_cli("runs", "--json", cwd=cwd)
    assert listed.returncode == 0
    rows = json.loads(listed.stdout)
    assert [row["id"] for row in rows] == [trained["run_id"]]
    assert rows[0]["finalLoss"] == pytest.approx(trained["final_loss"])
    shown = run_cli("metrics", trained["run_id"][:15], "--json", cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["steps"] == trained["steps"]
    text = run_cli("metrics", cwd=cwd)
    assert "| final loss |" in text.stdout and trained["run_id"] in text.stdout


def test_launcher_does_not_change_what_the_script_computes(synthetic_run):
    _, result = synthetic_run
    plain = subprocess.run([sys.executable, str(FIXTURES / "train_synthetic.py"), "--epochs", "3"],
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    observed = result.stdout[: result.stdout.rfind("\n{")].strip()
    assert observed == plain.stdout.strip()


def test_input_bound_run_is_diagnosed(tmp_path):
    result = run_cli("train", str(FIXTURES / "slow_dataset.py"), "--json", "--no-progress",
                     "--", "--delay-ms", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert summary["data_wait_fraction"] > 0.6
    assert "waiting for data" in summary["input_bound"]
    assert "num_workers=" in summary["input_bound"]
    assert summary["samples"] == 2 * 256


def test_crash_reports_the_failing_line(tmp_path):
    script = FIXTURES / "train_crash.py"
    result = run_cli("train", "--json", str(script), cwd=tmp_path)
    assert result.returncode == 1
    summary = last_json(result.stdout)
    validate("metrics", summary)
    assert summary["status"] == "failed"
    error = summary["error"]
    assert error["type"] == "RuntimeError"
    assert "mat1 and mat2" in error["message"]
    assert error["file"] == str(script)
    assert error["line"] == marker_line(script, "# <- fails here")
    assert summary["steps"] == 5  # what happened before the crash is kept
    assert "Traceback" in result.stderr


def test_max_steps_stops_early(tmp_path):
    result = run_cli("train", "--max-steps", "7", "--json", str(FIXTURES / "train_synthetic.py"),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert summary["steps"] == 7 and summary["max_steps_reached"] is True


def test_bad_input_gives_clear_messages(tmp_path):
    missing = run_cli("train", str(tmp_path / "nope.py"), cwd=tmp_path)
    assert missing.returncode == 2 and "not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = run_cli("metrics", "no-such-run", cwd=tmp_path)
    assert unknown.returncode == 1 and "no run 'no-such-run'" in unknown.stderr
    empty = run_cli("runs", cwd=tmp_path)
    assert empty.returncode == 0 and "no runs" in empty.stdout


def test_own_options_are_recognised_after_the_script(tmp_path):
    result = run_cli("train", str(FIXTURES / "train_synthetic.py"), "--epochs", "2", "--max-steps", "7",
                     "--json", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert summary["steps"] == 7 and summary["max_steps_reached"] is True
    assert "script arguments: --epochs 2" in result.stderr.splitlines()
    info = json.loads((tmp_path / ".torch-lsp" / "runs" / summary["run_id"] / "run.json").read_text())
    assert info["args"] == ["--epochs", "2"] and info["max_steps"] == 7


AMBIGUOUS_SCRIPT = '''
import argparse
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--max-steps", type=int, default=0)
print("argv:", sys.argv[1:])
print("max_steps:", parser.parse_args().max_steps)
'''


def test_an_option_both_define_is_refused_unless_placed(tmp_path):
    script = tmp_path / "own_steps.py"
    script.write_text(AMBIGUOUS_SCRIPT)
    refused = run_cli("train", str(script), "--max-steps", "3", cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--max-steps is an option of both torch-lsp train and own_steps.py" in refused.stderr
    assert "`torch-lsp train --max-steps 3 own_steps.py`" in refused.stderr
    assert "`torch-lsp train own_steps.py -- --max-steps 3`" in refused.stderr
    assert not (tmp_path / ".torch-lsp").exists()  # nothing was started

    theirs = run_cli("train", "--json", "--no-progress", str(script), "--", "--max-steps", "3", cwd=tmp_path)
    assert theirs.returncode == 0, theirs.stderr
    assert "max_steps: 3" in theirs.stdout and "script arguments: --max-steps 3" in theirs.stderr
    assert last_json(theirs.stdout)["max_steps_reached"] is False


def test_metrics_with_an_ambiguous_prefix_lists_the_candidates(tmp_path):
    ids = copy_recorded_runs(tmp_path / ".torch-lsp" / "runs")
    prefix = os.path.commonprefix(ids)
    shown = run_cli("metrics", prefix, cwd=tmp_path)
    assert shown.returncode == 1
    assert f"{prefix!r} matches {len(ids)} runs; give more of the id:" in shown.stderr
    for run_id in ids:
        assert run_id in shown.stderr
    unique = run_cli("metrics", "--json", ids[0][: len(prefix) + 3], cwd=tmp_path)
    assert unique.returncode == 0 and json.loads(unique.stdout)["run_id"] == ids[0]


def test_runs_table_shows_each_runs_own_age(tmp_path):
    runs_dir = tmp_path / ".torch-lsp" / "runs"
    ids = copy_recorded_runs(runs_dir)
    now = time.time()
    for age_s, run_id in zip((30, 3 * 3600, 2 * 86400), ids):  # newest first in the table
        info_path = runs_dir / run_id / "run.json"
        info = json.loads(info_path.read_text())
        info["started_at"] = now - age_s
        info_path.write_text(json.dumps(info))
    listed = run_cli("runs", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["run", "status", "steps", "final", "loss", "started"]
    assert [row.split("  ")[-1].strip() for row in rows] == ["just now", "3 h ago", "2 d ago"]
    assert [row.split()[0] for row in rows] == ids


def test_an_empty_store_says_so(tmp_path):
    runs = run_cli("runs", cwd=tmp_path)
    assert runs.returncode == 0 and runs.stdout.startswith("no runs yet in ")
    metrics = run_cli("metrics", cwd=tmp_path)
    assert metrics.returncode == 1 and "no runs yet in " in metrics.stderr and "any run" not in metrics.stderr
