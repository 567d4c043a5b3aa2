"""Pure parts of training: summary, progress text, printed-pair parsing, epoch detection, store."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from torch_lsp.training import store
from torch_lsp.training.chart import render_chart, series_from_records
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


def test_summary_of_records():
    records = [
        {"kind": "start", "time": 999.0},
        _step(1, 2.0, epoch=1, samples=32, data_wait_s=0.5, compute_s=0.5, device="cpu"),
        {"kind": "metric", "name": "val_acc", "value": 0.5, "step": 1, "source": "print"},
        _step(2, 0.5, epoch=2, samples=64, data_wait_s=0.75, compute_s=1.25, device="cpu"),
        {"kind": "metric", "name": "val_acc", "value": 0.25, "step": 2, "source": "print"},
        {"kind": "metric", "name": "val_loss", "value": 0.75, "step": 2, "source": "log"},
        {"kind": "metric", "name": "val_loss", "value": 1.5, "step": 2, "source": "log"},
        {"kind": "metric", "name": "epoch", "value": 2, "step": 2, "source": "print"},
    ]
    info = {"id": "r1", "status": "completed", "exit_code": 0, "started_at": 990.0, "ended_at": 1010.0}
    summary = compute_summary(info, records)
    assert summary["duration_s"] == 20.0
    assert summary["steps"] == 2 and summary["epochs"] == 2
    assert summary["steps_per_s"] == 1.0 and summary["samples_per_s"] == 32.0
    assert summary["final_loss"] == 0.5 and summary["best_loss"] == 0.5
    assert summary["data_wait_fraction"] == 0.375
    assert summary["metrics"]["val_acc"] == {"source": "print", "last": 0.25, "count": 2, "best": 0.5}
    assert summary["metrics"]["val_loss"]["best"] == 0.75  # lower is better for losses
    assert "best" not in summary["metrics"]["epoch"]
    assert summary["input_bound"].startswith("38 % of step time waiting for data")
    markdown = render_markdown(summary)
    assert "| final loss | 0.5 |" in markdown and "| val_acc | 0.25 | 0.5 | print |" in markdown


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


def test_chart_is_a_png_with_a_panel_per_series(tmp_path):
    from PIL import Image

    records = [_step(i, 1.0 / i) for i in range(1, 20)]
    records += [{"kind": "metric", "name": "acc", "value": i / 20, "step": i} for i in range(1, 20)]
    records += [{"kind": "metric", "name": "epoch", "value": 1, "step": 3}]
    assert list(series_from_records(records)) == ["loss", "acc"]
    path = render_chart(records, tmp_path / "chart.png", title="t.py")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (900, 520)
    assert render_chart([], tmp_path / "empty.png") is None


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
