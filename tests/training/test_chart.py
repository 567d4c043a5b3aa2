"""The run chart, drawn from a recorded run (tests/training/recorded): its panels, shared step
axis, epoch marks and series, read back from the matplotlib Figure and from the SVG text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from torch_lsp.training import store
from torch_lsp.training.chart import build_figure, chart_data, ema, ema_span, save_chart

RECORDED = Path(__file__).resolve().parent / "recorded" / "runs"


def recorded(script: str) -> list[dict]:
    [run] = [r for r in RECORDED.iterdir() if f"-{script}-" in r.name]
    return store.read_records(run / store.METRICS_FILE)


@pytest.fixture(scope="module")
def records():
    return recorded("train_synthetic")  # 5 epochs, a one-cycle LR schedule, printed val_acc


@pytest.fixture(scope="module")
def figure(records):
    return build_figure(chart_data(records), "train_synthetic.py")


def _epoch_starts(records) -> list[int]:
    starts, seen = [], {}
    for r in records:
        if r["kind"] == "step" and r.get("epoch") and r["epoch"] not in seen:
            seen[r["epoch"]] = r["step"]
    return [seen[e] for e in sorted(seen)[1:]]


def test_panels_in_order_over_one_shared_step_axis(figure):
    axes = [ax for ax in figure.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in axes] == [
        "loss", "learning rate", "throughput", "waiting for data", "val_acc"]
    assert all(axes[0].get_shared_x_axes().joined(axes[0], ax) for ax in axes)
    assert axes[-1].get_xlabel() == "optimizer step"
    assert [ax.get_ylabel() for ax in axes] == ["loss", "lr", "samples/s", "% of loop time", "val_acc"]


def test_loss_panel_has_raw_points_and_their_moving_average(figure, records):
    loss_ax = figure.axes[0]
    lines = {line.get_label(): line for line in loss_ax.get_lines() if not line.get_label().startswith("_")}
    raw = [(r["step"], r["loss"]) for r in records if r["kind"] == "step" and r.get("loss") is not None]
    assert list(lines["loss (raw)"].get_xdata()) == [s for s, _ in raw]
    assert list(lines["loss (raw)"].get_ydata()) == [v for _, v in raw]
    [smoothed] = [line for label, line in lines.items() if label.startswith("loss, moving average")]
    expected = ema([v for _, v in raw], ema_span(len(raw)))
    assert list(smoothed.get_ydata()) == pytest.approx(expected)
    # The EMA is smoother than the raw curve: smaller total variation.
    variation = lambda ys: sum(abs(b - a) for a, b in zip(ys, ys[1:]))  # noqa: E731
    assert variation(expected) < variation([v for _, v in raw])
    printed = [r["value"] for r in records if r["kind"] == "metric" and r["name"] == "loss"]
    assert list(lines["loss as the script reports it"].get_ydata()) == printed


def test_epoch_boundaries_are_marked_on_every_panel(figure, records):
    starts = _epoch_starts(records)
    assert len(starts) == 4
    for ax in [ax for ax in figure.axes if ax.get_title(loc="left")]:
        verticals = sorted(line.get_xdata()[0] for line in ax.get_lines()
                           if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2
                           and line.get_linestyle() == "--")
        assert verticals == starts, ax.get_title(loc="left")
    [top] = figure.axes[0].child_axes
    assert [t.get_text() for t in top.get_xticklabels()] == ["epoch 2", "epoch 3", "epoch 4", "epoch 5"]


def test_learning_rate_throughput_and_data_wait_series(figure, records):
    steps = [r for r in records if r["kind"] == "step"]
    lr_ax, speed_ax, wait_ax = figure.axes[1:4]
    [lr_line] = [line for line in lr_ax.get_lines() if line.get_label() == "learning rate"]
    assert list(lr_line.get_ydata()) == [r["lr"][0] for r in steps if r["lr"]]  # none before the first step
    assert lr_ax.get_yscale() == "log"  # one-cycle spans more than a factor of 20
    [speed] = [line for line in speed_ax.get_lines() if line.get_label() == "samples/s"]
    assert len(speed.get_xdata()) >= 10 and min(speed.get_ydata()) > 0
    # Throughput over the whole run agrees with the windows it is drawn from.
    loop = lambda r: r["data_wait_s"] + r["compute_s"]  # noqa: E731
    overall = (steps[-1]["samples"] - steps[0]["samples"]) / (loop(steps[-1]) - loop(steps[0]))
    assert min(speed.get_ydata()) <= overall <= max(speed.get_ydata())
    [wait] = [line for line in wait_ax.get_lines() if line.get_label() == "waiting for data"]
    assert all(0 <= y <= 100 for y in wait.get_ydata())
    assert wait_ax.get_ylim() == (0, 100)


def test_chart_files_png_and_svg_are_readable(tmp_path, records):
    written = save_chart(records, tmp_path / "chart.png", "train_synthetic.py · run x · completed · 160 steps")
    assert written == [tmp_path / "chart.png", tmp_path / "chart.svg"]
    with Image.open(written[0]) as image:
        assert image.format == "PNG" and image.width >= 1000 and image.height >= 5 * 200
    svg = written[1].read_text()
    texts = {re.sub(r"\s+", " ", t).strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)}
    for expected in ("loss", "learning rate", "throughput", "waiting for data", "val_acc",
                     "optimizer step", "epoch 2", "epoch 5", "loss (raw)", "input-bound above 30%",
                     "train_synthetic.py · run x · completed · 160 steps"):
        assert expected in texts, expected
    assert not list(tmp_path.glob(".*tmp"))  # written through a temporary name, then renamed


def test_runs_without_a_dataloader_or_records():
    crash = chart_data(recorded("train_crash"))  # five steps, no DataLoader, printed loss
    # No throughput over five steps: timer noise, as in the summary.
    assert [p.title for p in crash.panels] == ["loss", "learning rate"]
    [printed] = [points for name, points in crash.panels[0].series.items() if name != "loss"]
    assert len(printed) == 5
    assert chart_data([]).panels == []
    assert save_chart([], Path("/nonexistent/chart.png")) == []


def test_metrics_beyond_the_panel_limit_are_named_not_dropped_silently():
    records = [{"kind": "metric", "name": f"m{i}", "value": v, "step": s, "source": "log"}
               for i in range(8) for s, v in ((1, 0.1), (2, 0.2))]
    data = chart_data(records)
    assert [p.title for p in data.panels] == [f"m{i}" for i in range(6)]
    assert data.hidden_metrics == ["m6", "m7"]
    assert "not shown: m6, m7" in build_figure(data)._suptitle.get_text()


def test_the_run_store_keeps_chart_paths_in_the_summary(tmp_path):
    from torch_lsp.training.runner import finalize

    run_dir = tmp_path / "runs" / "20261201-005243-train_synthetic-bd13"
    run_dir.mkdir(parents=True)
    source = next(r for r in RECORDED.iterdir() if "train_synthetic" in r.name)
    for name in ("run.json", "metrics.jsonl"):
        (run_dir / name).write_text((source / name).read_text())
    summary = finalize(store.RunRecord(run_dir, json.loads((run_dir / "run.json").read_text())))
    assert summary["chart"] == str(run_dir / "chart.png") and Path(summary["chart_svg"]).is_file()
    assert json.loads((run_dir / "summary.json").read_text())["chart_svg"] == summary["chart_svg"]


def test_live_redraws_do_not_pile_up(tmp_path, monkeypatch):
    """However often a client asks for a live run's metrics, at most one helper draws its chart,
    and not more often than LIVE_REDRAW_INTERVAL_S; the answer never waits for the drawing."""
    from torch_lsp.training import artifacts

    started = []

    class FakeHelper:
        def __init__(self, command, **kwargs):
            started.append(command)

        def poll(self):
            return 0  # finished at once

    monkeypatch.setattr(artifacts.subprocess, "Popen", FakeHelper)
    clock = [1000.0]
    monkeypatch.setattr(artifacts, "_now", lambda: clock[0])
    (tmp_path / "chart.png").write_bytes(b"png")
    for _ in range(5):
        assert artifacts.redraw_in_background(tmp_path)["chart"] == str(tmp_path / "chart.png")
    assert len(started) == 1
    clock[0] += artifacts.LIVE_REDRAW_INTERVAL_S
    artifacts.redraw_in_background(tmp_path)
    assert len(started) == 2 and started[-1][-3:-1] == ["torch_lsp.training.artifacts", str(tmp_path)]
