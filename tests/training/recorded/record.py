"""Re-record the run store that tests and docs examples read: `python -m tests.training.recorded.record`.

Runs three real, short trainings of the fixtures with `torch-lsp train` in a temporary store
(a completed run with a one-cycle schedule, a crash, a run stopped by --max-steps) and keeps
their run.json and metrics.jsonl under tests/training/recorded/runs/, with machine-specific
paths replaced by neutral ones. Summaries and charts are not kept: they are computed again
from these files, which is what the tests check. Docs examples name these runs by id: after
re-recording, put the new ids in docs/cli.md and docs/commands.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
NEUTRAL_ROOT = "/home/you/project"
TRAININGS = [
    # Every step recorded (not one record per 50 ms): this run is fast, and the chart needs points.
    ["--env", "TORCH_LSP_RECORD_INTERVAL=0", "fixtures/train_synthetic.py",
     "--", "--epochs", "5", "--schedule", "onecycle", "--lr", "0.1"],
    ["fixtures/train_crash.py"],
    ["--max-steps", "20", "fixtures/cifar10_seed.py"],
]


def main() -> None:
    target = HERE / "runs"
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "runs"
        for arguments in TRAININGS:
            subprocess.run([sys.executable, "-m", "torch_lsp", "train", "--no-progress", "--runs-dir", str(store),
                            *arguments], cwd=ROOT, check=False)
        shutil.rmtree(target, ignore_errors=True)
        for run in sorted(store.iterdir()):
            (target / run.name).mkdir(parents=True)
            for name in ("run.json", "metrics.jsonl"):
                text = (run / name).read_text()
                text = text.replace(str(ROOT), NEUTRAL_ROOT).replace(sys.executable, "/usr/bin/python3")
                text = text.replace(tmp, f"{NEUTRAL_ROOT}/.torch-lsp")
                (target / run.name / name).write_text(text)
            json.loads((target / run.name / "run.json").read_text())  # still valid JSON
    print(f"recorded {len(list(target.iterdir()))} runs in {target}")
    draw_docs_chart()


def draw_docs_chart() -> None:
    from torch_lsp.training import store
    from torch_lsp.training.chart import save_chart

    [run] = [r for r in (HERE / "runs").iterdir() if "-train_synthetic-" in r.name]
    with tempfile.TemporaryDirectory() as tmp:
        [png, _] = save_chart(store.read_records(run / store.METRICS_FILE), Path(tmp) / "chart.png",
                              f"train_synthetic.py · run {run.name} · completed · 160 steps")
        shutil.copy(png, ROOT / "docs" / "images" / "chart.png")


if __name__ == "__main__":
    draw_docs_chart() if sys.argv[1:] == ["--chart-only"] else main()
