"""Metrics the launcher collects without changes to the script, and the explicit API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from tests.training.helpers import FIXTURES, REPO, last_json, run_cli

pytestmark = pytest.mark.slow  # real training runs in subprocesses

# A SummaryWriter stand-in with tensorboardX's module layout: the launcher must patch it when
# the script imports it (the real one needs the tensorboard package, which tests do not need).
FAKE_TENSORBOARDX = {
    "tensorboardX/__init__.py": "from tensorboardX.writer import SummaryWriter\n",
    "tensorboardX/writer.py": textwrap.dedent('''
        class SummaryWriter:
            def __init__(self, logdir=None):
                self.calls = []

            def add_scalar(self, tag, scalar_value, global_step=None):
                self.calls.append((tag, scalar_value, global_step))
                return "written"
    '''),
}

SCRIPT = textwrap.dedent('''
    import torch
    import torch_lsp
    from tensorboardX import SummaryWriter

    torch.manual_seed(0)
    weight = torch.zeros(3, requires_grad=True)
    target = torch.tensor([1.0, -2.0, 0.5])
    optimizer = torch.optim.Adam([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
    writer = SummaryWriter()
    for step in range(30):  # no DataLoader: tensors made in the loop
        optimizer.zero_grad()
        loss = ((weight - target) ** 2).sum()
        loss.backward()
        optimizer.step()
        scheduler.step()
        assert writer.add_scalar("train/loss", loss.item(), step) == "written"
    torch_lsp.log(accuracy=0.75, f1=torch.tensor(0.5))
    torch_lsp.log(accuracy=0.875)
    print("eval loss: 0.125 | top1=61.5 | http://example.org/x")
    assert len(writer.calls) == 30
''')


def test_summary_writer_log_api_and_printed_pairs(tmp_path):
    for name, text in FAKE_TENSORBOARDX.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    script = tmp_path / "train_api.py"
    script.write_text(SCRIPT)
    result = run_cli("train", "--json", str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    metrics = summary["metrics"]
    assert metrics["train/loss"]["count"] == 30 and metrics["train/loss"]["source"] == "tensorboard"
    assert metrics["accuracy"] == {"source": "log", "last": 0.875, "count": 2, "best": 0.875}
    assert metrics["f1"]["last"] == 0.5
    assert metrics["loss"]["last"] == 0.125 and metrics["top1"]["last"] == 61.5
    assert "http" not in metrics
    assert summary["steps"] == 30
    assert summary["last_lr"] == [0.1 * 0.5 ** 2]  # the rate the 30th step used (StepLR halves it every 10)
    assert summary["steps_per_s"] > 0 and summary["samples_per_s"] is None
    records = [json.loads(line) for line in
               (tmp_path / ".torch-lsp" / "runs" / summary["run_id"] / "metrics.jsonl").read_text().splitlines()]
    scalars = [r for r in records if r.get("name") == "train/loss"]
    assert [r["step"] for r in scalars] == list(range(1, 31))  # add_scalar runs after each step
    values = [r["value"] for r in scalars]
    assert metrics["train/loss"]["best"] == min(values) and values[-1] < values[0]
    # The loss seen at backward() is the value the script itself logged for the same step.
    assert summary["final_loss"] == values[-1]


def test_log_outside_a_run_is_a_no_op_and_import_stays_light():
    code = ("import sys, torch_lsp; torch_lsp.log(loss=1.0); "
            "print('torch' in sys.modules, 'torch_lsp.training.probe' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.slow
def test_torchrun_with_two_processes_reports_rank_zero_only(tmp_path):
    result = run_cli("train", "--json", "--nproc", "2", "--env", "DDP_EPOCHS=3",
                     str(FIXTURES / "train_ddp.py"), cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert summary["status"] == "completed" and summary["nproc"] == 2
    # 512 samples split over 2 ranks, batches of 32: 8 steps per epoch on rank 0.
    assert summary["steps"] == 3 * 8 and summary["epochs"] == 3 and summary["epochs_total"] == 3
    assert summary["samples"] == 3 * 256
    run_dir = tmp_path / ".torch-lsp" / "runs" / summary["run_id"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    starts = [r for r in records if r["kind"] == "start"]
    assert len(starts) == 1 and starts[0]["world_size"] == 2
    output = (run_dir / "stdout.log").read_text()
    assert "rank 0: epoch=3" in output and "rank 1: epoch=3" in output
    # Both ranks write to one file and print() writes the text and its newline separately, so
    # their lines interleave ("rank 1: ... loss=0.0885rank 0: ... loss=0.0708"): match, not split.
    printed_losses = {rank: float(loss) for rank, loss
                      in re.findall(r"rank (\d+): epoch=3 loss=(\d+\.\d+)", output)}
    assert set(printed_losses) == {"0", "1"}
    assert abs(summary["final_loss"] - printed_losses["0"]) < 1e-4  # rank 0's own loss
