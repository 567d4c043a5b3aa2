"""The run's chart, drawn with matplotlib: every panel over one shared step axis, epochs marked.

Panels, top to bottom (each only when the run recorded it): the loss (raw points and their
exponential moving average), the learning rate, throughput, the share of the loop spent
waiting for data, then each user metric (`torch_lsp.log`, TensorBoard scalars, printed pairs).

matplotlib costs ~0.5 s and tens of MB to import, so it is never imported by the language
server: the chart is drawn by a helper process (training/artifacts.py). `chart_data()` is pure
and cheap; `build_figure()` and `save_chart()` import matplotlib.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from torch_lsp.training.summary import _BOOKKEEPING, INPUT_BOUND_FRACTION, MIN_STEPS_FOR_RATE, measured_window

Series = list[tuple[float, float]]  # (step, value)

MAX_METRIC_PANELS = 6
WINDOWS_PER_RUN = 60
PANEL_HEIGHT_IN, WIDTH_IN, DPI = 2.1, 10.0, 100
LEFT_IN, RIGHT_IN, TOP_IN, BOTTOM_IN, GAP_IN = 0.9, 0.2, 0.75, 0.55, 0.45  # room for labels
RAW_COLOR, SMOOTH_COLOR = "#9ecae1", "#08519c"
COLORS = ["#08519c", "#d94801", "#238b45", "#6a51a3", "#a50f15", "#525252"]


@dataclass
class Panel:
    """One axes: a title, a y label and named series; `smooth` adds an EMA of the first one."""

    title: str
    ylabel: str
    series: dict[str, Series]
    smooth: bool = False
    log_y: bool = False
    percent: bool = False
    step_plot: bool = False


@dataclass
class ChartData:
    panels: list[Panel] = field(default_factory=list)
    epoch_starts: list[float] = field(default_factory=list)  # steps where epochs 2, 3, ... begin
    hidden_metrics: list[str] = field(default_factory=list)  # beyond MAX_METRIC_PANELS


def ema(values: list[float], span: float) -> list[float]:
    """Exponential moving average with weight 2 / (span + 1), debiased like TensorBoard's
    smoothing so that the first points are not pulled towards zero."""
    alpha = 2.0 / (span + 1.0)
    smoothed, average, weight = [], 0.0, 0.0
    for value in values:
        average = (1 - alpha) * average + alpha * value
        weight = (1 - alpha) * weight + alpha
        smoothed.append(average / weight)
    return smoothed


def ema_span(points: int) -> float:
    """About a twentieth of the run, at least 5 points: smooth enough to read a trend, short
    enough to follow a learning-rate drop."""
    return max(5.0, points / 20)


def chart_data(records: list[dict]) -> ChartData:
    steps = [r for r in records if r.get("kind") == "step"]
    # Rates over a handful of steps are timer noise: like the summary, leave them out.
    timed_steps = steps if measured_window(steps).steps >= MIN_STEPS_FOR_RATE else []
    data = ChartData(epoch_starts=_epoch_starts(records))
    metrics = _metric_series(records)
    loss = [(r["step"], r["loss"]) for r in steps if _number(r.get("loss"))]
    if loss:
        series = {"loss": loss}
        # The loss the script prints (often an epoch's mean) is the same quantity: same panel.
        if "loss" in metrics:
            series["loss as the script reports it"] = metrics.pop("loss")
        data.panels.append(Panel("loss", "loss", series, smooth=True))
    data.panels.extend(_learning_rate(steps))
    data.panels.extend(_throughput(timed_steps))
    data.panels.extend(_data_wait(timed_steps))
    # A value recorded once (a final count, a test score) is a number, not a curve: the
    # summary table shows it.
    curves = {name: points for name, points in metrics.items() if len(points) >= 2}
    for name, points in list(curves.items())[:MAX_METRIC_PANELS]:
        data.panels.append(Panel(name, name, {name: points}))
    data.hidden_metrics = list(curves)[MAX_METRIC_PANELS:]
    return data


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _epoch_starts(records: list[dict]) -> list[float]:
    """First step of each epoch after the first, from the epoch numbers of the step records."""
    starts, previous = [], None
    for record in records:
        if record.get("kind") != "step" or not isinstance(record.get("epoch"), int):
            continue
        if previous is not None and record["epoch"] > previous:
            starts.append(record["step"])
        previous = record["epoch"]
    return starts


def _learning_rate(steps: list[dict]) -> list[Panel]:
    groups: dict[str, Series] = {}
    for record in steps:
        for index, value in enumerate(record.get("lr") or []):
            if _number(value):
                groups.setdefault(f"group {index}", []).append((record["step"], value))
    # Param groups that share one schedule are one line.
    distinct: dict[str, Series] = {}
    for name, points in groups.items():
        if points not in distinct.values():
            distinct[name] = points
    if not distinct:
        return []
    if len(distinct) == 1:
        distinct = {"learning rate": next(iter(distinct.values()))}
    values = [v for points in distinct.values() for _, v in points if v > 0]
    log_y = bool(values) and max(values) / min(values) >= 20
    return [Panel("learning rate", "lr", distinct, log_y=log_y, step_plot=True)]


def _loop_time(record: dict) -> float:
    return (record.get("data_wait_s") or 0.0) + (record.get("compute_s") or 0.0)


def _loop_windows(steps: list[dict]) -> list[tuple[float, dict, dict]]:
    """(step, first record, last record) of consecutive stretches of the DataLoader loop, each
    at least a sixtieth of the loop's time: a rate over a few milliseconds (an epoch's first
    batch, a throttled record) is timer noise, not throughput."""
    timed = [r for r in steps if _number(r.get("data_wait_s")) and _number(r.get("samples"))]
    if len(timed) < 2:
        return []
    least = (_loop_time(timed[-1]) - _loop_time(timed[0])) / WINDOWS_PER_RUN
    windows, start = [], timed[0]
    for record in timed[1:]:
        if _loop_time(record) - _loop_time(start) >= least > 0 and record["step"] > start["step"]:
            windows.append((record["step"], start, record))
            start = record
    return windows


def _throughput(steps: list[dict]) -> list[Panel]:
    samples = [(step, (last["samples"] - first["samples"]) / (_loop_time(last) - _loop_time(first)))
               for step, first, last in _loop_windows(steps)]
    if samples:
        return [Panel("throughput", "samples/s", {"samples/s": samples})]
    rates = []  # without a DataLoader: optimizer steps per second of wall time between records
    for before, after in zip(steps, steps[1:]):
        seconds = (after.get("time") or 0) - (before.get("time") or 0)
        if seconds > 0 and after["step"] > before["step"]:
            rates.append((after["step"], (after["step"] - before["step"]) / seconds))
    return [Panel("throughput", "steps/s", {"steps/s": rates})] if len(rates) >= 2 else []


def _data_wait(steps: list[dict]) -> list[Panel]:
    """Share of the loop spent waiting for the next batch, per stretch of the loop."""
    points = [(step, 100 * min(1.0, max(0.0, (last["data_wait_s"] - first["data_wait_s"])
                                        / (_loop_time(last) - _loop_time(first)))))
              for step, first, last in _loop_windows(steps)]
    return [Panel("waiting for data", "% of loop time", {"waiting for data": points}, percent=True)] if points else []


def _metric_series(records: list[dict]) -> dict[str, Series]:
    """User metrics by name; the same name from two sources (a printed and a logged `loss`)
    stays two series."""
    series: dict[str, Series] = {}
    sources: dict[str, str] = {}
    for record in records:
        if record.get("kind") != "metric" or not _number(record.get("value")):
            continue
        name = record["name"]
        if name.lower() in _BOOKKEEPING:
            continue
        source = record.get("source") or "?"
        if sources.setdefault(name, source) != source:
            name = f"{name} ({source})"
        series.setdefault(name, []).append((record.get("step") or 0, record["value"]))
    return series


# -- drawing (imports matplotlib) ---------------------------------------------------------------

def build_figure(data: ChartData, title: str = ""):
    """A matplotlib Figure (no pyplot, no GUI backend), one axes per panel, x shared."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    count = len(data.panels)
    height = TOP_IN + BOTTOM_IN + PANEL_HEIGHT_IN * count
    figure = Figure(figsize=(WIDTH_IN, height), dpi=DPI)
    # Fixed margins, in inches: matplotlib's constrained layout would cost ~1 s per file written.
    axes = figure.subplots(count, 1, sharex=True, squeeze=False, gridspec_kw={
        "left": LEFT_IN / WIDTH_IN, "right": 1 - RIGHT_IN / WIDTH_IN, "top": 1 - TOP_IN / height,
        "bottom": BOTTOM_IN / height, "hspace": GAP_IN / (PANEL_HEIGHT_IN - GAP_IN)})[:, 0]
    for index, (ax, panel) in enumerate(zip(axes, data.panels)):
        color = COLORS[index % len(COLORS)]
        _draw_panel(ax, panel, color)
        ax.set_title(panel.title, loc="left", fontsize=11, fontweight="bold")
        ax.set_ylabel(panel.ylabel, fontsize=10)
        ax.grid(True, color="#e0e0e0", linewidth=0.8)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        if panel.percent:
            ax.set_ylim(0, 100)
            ax.yaxis.set_major_formatter(PercentFormatter())
            ax.axhline(INPUT_BOUND_FRACTION * 100, color="#a50f15", linewidth=0.8, linestyle=":",
                       label=f"input-bound above {INPUT_BOUND_FRACTION:.0%}")
        if panel.log_y:
            ax.set_yscale("log")
        for start in data.epoch_starts:
            ax.axvline(start, color="#969696", linewidth=0.8, linestyle="--", zorder=0)
        if len(panel.series) > 1 or panel.smooth or panel.percent:
            ax.legend(loc="best", fontsize=9, framealpha=0.85, edgecolor="none")
    _label_epochs(axes[0], data.epoch_starts)
    axes[-1].set_xlabel("optimizer step", fontsize=10)
    axes[-1].xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
    heading = title or "training run"
    if data.hidden_metrics:
        heading += f"  (not shown: {', '.join(data.hidden_metrics)})"
    figure.suptitle(heading, fontsize=12, x=0.01, y=1 - 0.12 / height, ha="left", va="top")
    return figure


def _draw_panel(ax, panel: Panel, color: str) -> None:
    for offset, (name, points) in enumerate(panel.series.items()):
        xs = [x for x, _ in points]
        ys = [y for _, y in points]
        line_color = COLORS[(COLORS.index(color) + offset) % len(COLORS)]
        if panel.smooth and offset == 0:
            ax.plot(xs, ys, color=RAW_COLOR, linewidth=0.9, label=f"{name} (raw)")
            span = ema_span(len(ys))
            ax.plot(xs, ema(ys, span), color=SMOOTH_COLOR, linewidth=2.0,
                    label=f"{name}, moving average ({span:.0f} points)")
        elif panel.smooth or len(points) == 1:
            ax.plot(xs, ys, "o", color=COLORS[1] if panel.smooth else line_color, markersize=5, label=name)
        elif panel.step_plot:
            ax.plot(xs, ys, drawstyle="steps-post", linewidth=1.6, label=name, color=line_color)
        else:
            ax.plot(xs, ys, linewidth=1.4, marker="o" if len(points) <= 30 else None, markersize=3,
                    label=name, color=line_color)


def _label_epochs(ax, starts: list[float]) -> None:
    """Epoch numbers on a second x axis above the first panel, at the dashed lines."""
    if not starts:
        return
    top = ax.secondary_xaxis("top")
    top.set_xticks(starts, [f"epoch {n}" for n in range(2, len(starts) + 2)], fontsize=8, color="#636363")
    top.tick_params(length=0, pad=2)


def save_chart(records: list[dict], png: Path, title: str = "") -> list[Path]:
    """Write the chart as PNG and SVG (same name, .svg); [] when there is nothing to plot."""
    import matplotlib

    data = chart_data(records)
    if not data.panels:
        return []
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "torch-lsp",
                                "font.family": "DejaVu Sans"}):
        figure = build_figure(data, title)
        written = []
        for path, options in ((png, {}), (png.with_suffix(".svg"), {"metadata": {"Date": None}})):
            # A reader never sees half a file; two writers (a run ending, a metrics request) never share one.
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            figure.savefig(tmp, format=path.suffix[1:], **options)
            tmp.replace(path)
            written.append(path)
    return written
