"""Pure parts of training: summary, progress text, printed-pair parsing, epoch detection, store."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from torch_lsp.training import store
from torch_lsp.training.epochs import EpochCounter
from torch_lsp.training.summary import (compute_summary, input_bound_advice, progress_message,
                                        render_markdown, short_label)
from torch_lsp.training.tensorboard_export import export_tensorboard, scalars_from_records


def _load_probe():
    """probe.py as the launcher loads it (beside _torch_lsp_epochs), without installing it."""
    folder = Path(__file__).resolve().parents[2] / "torch_lsp" / "training"
    for name, file in (("_torch_lsp_epochs", "epochs.py"), ("_torch_lsp_probe_under_test", "probe.py")):
        spec = importlib.util.spec_from_file_location(name, folder / file)
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(name, module)
        spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("line, expected", [
    ("Epoch: 1, Loss: 0.345", [("Epoch", "1"), ("Loss", "0.345")]),
    ("[1,  2000] loss: 2.196", [("loss", "2.196")]),
    ("step=340 lr=1e-3 acc=93.5%", [("step", "340"), ("lr", "1e-3"), ("acc", "93.5")]),
    ("val/top1: -0.5", [("val/top1", "-0.5")]),
    ("see http://host:8080/path and time 12:30:45", []),
    ("loss: nan", []),
    ("version: 2.14.1", []),
])
def test_printed_pairs(line, expected):
    probe = _load_probe()
    assert probe.PRINTED_PAIR.findall(line) == expected


def _step(step, loss, **extra):
    return {"kind": "step", "time": 1000.0 + step, "step": step, "loss": loss, "lr": [0.1], **extra}


def _loader_steps(count, first=1, samples_per_step=32, wait_s=0.25, compute_s=0.75, start_wait_s=0.0, **extra):
    """Step records of a DataLoader loop: cumulative samples and loop times, as the probe writes."""
    return [_step(step, 1.0 / step, samples=step * samples_per_step, data_wait_s=start_wait_s + step * wait_s,
                  compute_s=(step - 1) * compute_s, device="cpu", **extra)
            for step in range(first, first + count)]


def test_summary_of_records():
    records = [{"kind": "start", "time": 999.0}, *_loader_steps(10, epoch=1),
               {"kind": "metric", "name": "val_acc", "value": 0.5, "step": 10, "source": "print"},
               *_loader_steps(11, first=11, epoch=2),
               {"kind": "metric", "name": "val_acc", "value": 0.25, "step": 21, "source": "print"},
               {"kind": "metric", "name": "val_loss", "value": 0.75, "step": 21, "source": "log"},
               {"kind": "metric", "name": "val_loss", "value": 1.5, "step": 21, "source": "log"},
               {"kind": "metric", "name": "epoch", "value": 2, "step": 21, "source": "print"}]
    info = {"id": "r1", "status": "completed", "exit_code": 0, "started_at": 990.0, "ended_at": 1010.0}
    summary = compute_summary(info, records)
    assert summary["duration_s"] == 20.0
    assert summary["steps"] == 21 and summary["epochs"] == 2
    # From the first step record to the last: 20 steps, 20 x (0.25 s waiting + 0.75 s computing).
    assert summary["measured"] == {"steps": 20, "seconds": 20.0}
    assert summary["steps_per_s"] == 1.0 and summary["samples_per_s"] == 32.0
    assert summary["final_loss"] == 1 / 21 and summary["best_loss"] == 1 / 21
    assert summary["data_wait_fraction"] == 0.25
    assert summary["metrics"]["val_acc"] == {"source": "print", "last": 0.25, "count": 2, "best": 0.5}
    assert summary["metrics"]["val_loss"]["best"] == 0.75  # lower is better for losses
    assert "best" not in summary["metrics"]["epoch"]
    assert summary["input_bound"] is None  # 25 % < 30 %
    markdown = render_markdown(summary)
    assert "| final loss | 0.04762 |" in markdown and "| val_acc | 0.25 | 0.5 | print |" in markdown
    assert "| rates measured over | 20 steps in 20 s of the training loop |" in markdown


def test_a_cancelled_run_without_steps_has_no_rates_and_no_advice():
    # Ctrl-C while the first batches loaded: a batch fetched, nothing trained.
    records = [{"kind": "start", "time": 999.0},
               _step(0, None, samples=32, data_wait_s=0.0005, compute_s=0.0, epoch=1, num_workers=0)]
    summary = compute_summary({"status": "stopped", "started_at": 990.0, "ended_at": 1000.0}, records)
    assert summary["steps"] == 0
    assert summary["steps_per_s"] is None and summary["samples_per_s"] is None
    assert summary["data_wait_fraction"] is None and summary["input_bound"] is None
    markdown = render_markdown(summary)
    assert "waiting for data" not in markdown and "num_workers" not in markdown
    assert "| samples/s | — |" in markdown


def test_a_crash_after_a_few_steps_reports_no_rate():
    # train_crash.py: five quick steps without a DataLoader, then the crash.
    records = [_step(1, 0.9), _step(5, 0.5), {"kind": "error", "type": "RuntimeError", "message": "boom"}]
    summary = compute_summary({"status": "failed", "started_at": 990.0, "ended_at": 998.8}, records)
    assert summary["steps"] == 5 and summary["steps_per_s"] is None
    assert "| steps/s | — (too few steps to measure; needs 10) |" in render_markdown(summary)


def test_rates_leave_out_the_first_batch_and_advice_needs_evidence():
    # The first batch waited 30 s for workers to start; the loop itself is compute-bound.
    slow_start = _loader_steps(40, start_wait_s=30.0, epoch=1, num_workers=0)
    summary = compute_summary({"status": "completed"}, slow_start)
    assert summary["data_wait_fraction"] == 0.25 and summary["input_bound"] is None
    assert summary["samples_per_s"] == 32.0
    # Waiting nearly all the time, but over 3 steps only: no advice.
    waiting = _loader_steps(4, wait_s=1.0, compute_s=0.01, epoch=1, num_workers=0)
    assert compute_summary({"status": "stopped"}, waiting)["input_bound"] is None
    # The same over 40 steps: input-bound, with advice.
    waiting = _loader_steps(41, wait_s=1.0, compute_s=0.01, epoch=1, num_workers=0)
    assert "try num_workers=" in compute_summary({"status": "completed"}, waiting)["input_bound"]


def test_printed_loss_stands_in_when_no_backward_is_seen():
    records = [{"kind": "metric", "name": "loss", "value": v, "step": 0} for v in (3.0, 1.0, 2.0)]
    summary = compute_summary({"status": "completed"}, records)
    assert summary["final_loss"] == 2.0 and summary["best_loss"] == 1.0


def test_input_bound_advice():
    assert input_bound_advice(0.1, {}) is None
    assert input_bound_advice(None, {}) is None
    advice = input_bound_advice(0.62, {"num_workers": 0, "device": "cuda:0"})
    assert advice.startswith("62 % of step time waiting for data — try num_workers=")
    assert advice.endswith("pin_memory=True")
    assert "pin_memory" not in input_bound_advice(0.62, {"num_workers": 0, "device": "cpu"})


def test_progress_message_and_percentage():
    record = _step(340, 0.4123, epoch=2, epochs=10, batch=40, batches=200, samples_per_s=1830.4,
                   data_wait_s=1.0, compute_s=9.0)
    message, percentage = progress_message(record)
    assert message == "epoch 2/10 · step 340 · loss 0.4123 · 1,830 samples/s"
    assert percentage == 12  # (1 + 40/200) / 10
    assert progress_message(_step(5, None), max_steps=20) == ("step 5", 25)
    slow = _step(50, 1.0, epoch=1, data_wait_s=9.0, compute_s=1.0)
    assert progress_message(slow)[0].endswith("90 % of step time waiting for data")


def test_short_label():
    summary = {"status": "completed", "final_loss": 0.4123, "started_at": 1000.0, "duration_s": 20.0}
    assert short_label(summary, now=1000.0 + 20 + 180) == "Last run: loss 0.412 · 3 min ago"
    assert short_label({**summary, "status": "failed"}, now=1030.0) == "Last run: failed · loss 0.412 · just now"
    assert short_label(None) is None


def _epoch_total_seen_from_a_loop(epochs_setting):
    counter = EpochCounter()
    config = {"epochs": epochs_setting}
    loader = [1, 2]
    for epoch in range(1, config["epochs"] + 1):
        for batch in loader:
            counter.detect_total(sys._getframe())
            return counter.total


def test_epoch_total_is_read_from_the_enclosing_range_loop():
    EpochCounter.add_user_file(__file__)
    assert _epoch_total_seen_from_a_loop(7) == 7
    assert _epoch_total_seen_from_a_loop(3) == 3


def test_line_tail_reads_only_complete_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = store.LineTail(path)
    assert tail.read_new() == []
    path.write_text('{"a": 1}\n{"b":')
    assert tail.read_new() == ['{"a": 1}']
    with open(path, "a") as handle:
        handle.write(' 2}\n')
    assert tail.read_new() == ['{"b": 2}']
    assert store.read_records(path) == [{"a": 1}, {"b": 2}]


def test_store_finds_runs_by_prefix_and_skips_broken_folders(tmp_path):
    first = store.create_run(tmp_path, "a.py", {"script": "/x/a.py", "started_at": 1.0})
    second = store.create_run(tmp_path, "b.py", {"script": "/x/b.py", "started_at": 2.0})
    (tmp_path / "junk").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")
    assert [r.run_id for r in store.list_runs(tmp_path)] == [second.run_id, first.run_id]
    assert store.find_run(tmp_path).run_id == second.run_id
    assert store.find_run(tmp_path, first.run_id).run_id == first.run_id
    assert store.find_run(tmp_path, "nothing-like-it") is None
    assert store.latest_run_for_script(tmp_path, "/x/a.py").run_id == first.run_id
    assert store.list_runs(tmp_path / "missing") == []


def test_tensorboard_scalars(tmp_path):
    records = [_step(1, 0.5, samples_per_s=10.0), {"kind": "metric", "name": "acc", "value": 0.9, "step": 1, "time": 5.0}]
    assert [s[:3] for s in scalars_from_records(records)] == [
        ("train/loss", 1, 0.5), ("train/lr", 1, 0.1), ("train/samples_per_s", 1, 10.0), ("acc", 1, 0.9)]
    written = export_tensorboard(records, tmp_path / "tb")
    if importlib.util.find_spec("tensorboard") is None:
        assert written is None and not (tmp_path / "tb").exists()
    else:
        assert any((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_error_from_stderr_prefers_the_users_exception(tmp_path):
    from torch_lsp.training.runner import error_from_stderr

    user_file = tmp_path / "train.py"
    stderr = tmp_path / "stderr.log"
    stderr.write_text(f"""[rank1]: Traceback (most recent call last):
  File "{user_file}", line 12, in <module>
    main()
[rank1]:   File "{user_file}", line 7, in main
[rank1]:     raise ValueError("bad batch")
[rank1]: ValueError: bad batch
Traceback (most recent call last):
  File "/usr/lib/python3/site-packages/torch/distributed/run.py", line 9, in main
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
""")
    assert error_from_stderr(stderr) == {"type": "ValueError", "message": "bad batch",
                                         "file": str(user_file), "line": 7}
    assert error_from_stderr(tmp_path / "missing.log") is None


OURS = {"--json": 0, "--max-steps": 1, "--env": 1, "-h": 0, "--help": 0}


@pytest.mark.parametrize("argv, after", [
    (["train", "s.py", "--", "--max-steps", "3"], ["--", "--max-steps", "3"]),
    (["train", "--json", "--max-steps", "5", "s.py", "--x", "--", "--y"], ["--x", "--", "--y"]),
    (["train", "--max-steps=5", "s.py", "a"], ["a"]),
    (["train", "--", "s.py", "--json"], ["--", "--json"]),
])
def test_tokens_after_the_script_keep_the_double_dash(argv, after):
    from torch_lsp.training.arguments import tokens_after_script

    assert tokens_after_script(argv, OURS) == after


def test_split_script_arguments():
    from torch_lsp.training.arguments import AmbiguousOption, split_script_arguments

    split = split_script_arguments(["--lr", "0.1", "--max-steps", "9", "--json", "data/", "--", "--json"],
                                   OURS, {"--lr"}, "train.py")
    assert split.ours == ["--max-steps", "9", "--json"]
    assert split.script_args == ["--lr", "0.1", "data/", "--json"]
    assert split_script_arguments(["--env=A=1"], OURS, set(), "t.py").ours == ["--env=A=1"]
    with pytest.raises(AmbiguousOption, match="-h is an option of both"):
        split_script_arguments(["-h"], OURS, {"-h", "--help"}, "t.py")


def test_declared_options_of_a_script():
    from torch_lsp.analysis.script_options import declared_options

    source = """
import argparse
import click
from argparse import ArgumentParser as AP
parser = AP(add_help=False)
parser.add_argument("--max-steps", "-m", type=int)
other = argparse.ArgumentParser()
@click.option("--fast/--slow")
def main(): ...
"""
    assert declared_options(source) == {"--max-steps", "-m", "-h", "--help", "--fast", "--slow"}
    assert declared_options("def f(:") == set()
