"""What a run did, computed from its records: the summary, its markdown, the progress line.

Pure functions over plain dicts (no torch, no LSP): the server, the CLI and the tests share them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

# Share of the training loop spent waiting for batches above which a run is input-bound.
INPUT_BOUND_FRACTION = 0.3
# The first batch also pays for starting workers: judge the pipeline on a few steps, not one.
MIN_STEPS_FOR_ADVICE = 10
# Rates over fewer steps say more about timer noise than about the run.
MIN_STEPS_FOR_RATE = 10
# Names whose best value is the smallest one; everything else is better when larger.
_LOWER_IS_BETTER = ("loss", "err", "perplexity", "ppl", "mse", "mae", "rmse", "nll", "wer", "cer")
# Names that count or schedule rather than measure: they have a last value but no "best".
_BOOKKEEPING = {"epoch", "epochs", "step", "steps", "iter", "iteration", "batch", "lr",
                "learning_rate", "time", "global_step"}


def lower_is_better(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _LOWER_IS_BETTER)


def compute_summary(info: dict, records: list[dict]) -> dict:
    steps = [r for r in records if r.get("kind") == "step"]
    last = steps[-1] if steps else {}
    losses = [r["loss"] for r in steps if isinstance(r.get("loss"), (int, float))]
    metrics = _user_metrics(records)
    if not losses and "loss" in metrics:  # no backward() seen: the printed loss stands in
        losses = metrics["loss"]["values"]
    for entry in metrics.values():
        del entry["values"]
    ends = [r for r in records if r.get("kind") == "end"]
    duration = _duration(info, records, ends)
    window = measured_window(steps)
    error = next((r for r in reversed(records) if r.get("kind") == "error"), None)
    summary = {
        "run_id": info.get("id"),
        "script": info.get("script"),
        "status": info.get("status", "unknown"),
        "exit_code": info.get("exit_code"),
        "started_at": info.get("started_at"),
        "duration_s": round(duration, 3) if duration is not None else None,
        "epochs": last.get("epoch"),
        "epochs_total": last.get("epochs"),
        "steps": last.get("step") or 0,
        "steps_per_s": window.rate("steps"),
        "samples": last.get("samples"),
        "samples_per_s": window.rate("samples"),
        "measured": window.as_dict(),
        "final_loss": losses[-1] if losses else None,
        "best_loss": min(losses) if losses else None,
        "last_lr": last.get("lr") or None,
        "device": last.get("device") or info.get("device"),
        "data_wait_fraction": window.wait_fraction(),
        "input_bound": input_bound_advice(window.wait_fraction(), last) if window.enough_for_advice() else None,
        "metrics": metrics,
        "max_steps_reached": any(r.get("kind") == "max_steps" for r in records),
        "error": _error_summary(error, info),
        "nproc": info.get("nproc", 1),
    }
    return summary


@dataclass(frozen=True)
class MeasuredWindow:
    """The part of the training loop that rates are computed over: from the first step record to
    the last one, so the counts and the time cover the same steps (a crash, a Ctrl-C or the
    first batch's worker start-up do not inflate them). Times are the loop's own (waiting for
    batches + the rest of each step) when the steps come from a DataLoader, else wall time."""

    steps: int = 0
    samples: int | None = None
    seconds: float = 0.0
    data_wait_s: float | None = None

    def rate(self, what: str) -> float | None:
        count = self.steps if what == "steps" else self.samples
        if self.steps < MIN_STEPS_FOR_RATE or not count or self.seconds <= 0:
            return None
        return round(count / self.seconds, 3)

    def wait_fraction(self) -> float | None:
        if self.data_wait_s is None or self.steps < MIN_STEPS_FOR_RATE or self.seconds <= 0:
            return None
        return round(min(1.0, self.data_wait_s / self.seconds), 4)

    def enough_for_advice(self) -> bool:
        return self.steps >= MIN_STEPS_FOR_ADVICE and self.wait_fraction() is not None

    def as_dict(self) -> dict:
        return {"steps": self.steps, "seconds": round(self.seconds, 6)}


def measured_window(steps: list[dict]) -> MeasuredWindow:
    if len(steps) < 2:
        return MeasuredWindow()
    first, last = steps[0], steps[-1]
    counted = (last.get("step") or 0) - (first.get("step") or 0)
    if last.get("samples") is None:  # no DataLoader: wall time between the records
        return MeasuredWindow(counted, None, (last.get("time") or 0) - (first.get("time") or 0))

    def loop_time(record: dict) -> float:
        return (record.get("data_wait_s") or 0.0) + (record.get("compute_s") or 0.0)

    return MeasuredWindow(counted, (last.get("samples") or 0) - (first.get("samples") or 0),
                          loop_time(last) - loop_time(first),
                          (last.get("data_wait_s") or 0.0) - (first.get("data_wait_s") or 0.0))


def _user_metrics(records: list[dict]) -> dict:
    metrics: dict[str, dict] = {}
    for record in records:
        if record.get("kind") != "metric" or not isinstance(record.get("value"), (int, float)):
            continue
        name, value = record["name"], record["value"]
        entry = metrics.setdefault(name, {"values": [], "source": record.get("source")})
        entry["values"].append(value)
    for name, entry in metrics.items():
        values = entry["values"]
        entry["last"] = values[-1]
        entry["count"] = len(values)
        if name.lower() not in _BOOKKEEPING:
            entry["best"] = min(values) if lower_is_better(name) else max(values)
    return metrics


def _duration(info: dict, records: list[dict], ends: list[dict]) -> float | None:
    start = info.get("started_at")
    end = info.get("ended_at")
    if start and end:
        return end - start
    if ends and ends[-1].get("duration_s") is not None:
        return ends[-1]["duration_s"]
    if start:
        return time.time() - start
    return None


def input_bound_advice(wait_fraction: float | None, last_step: dict) -> str | None:
    """A sentence when the loop waits for data more than INPUT_BOUND_FRACTION of the time."""
    if wait_fraction is None or wait_fraction < INPUT_BOUND_FRACTION:
        return None
    workers = last_step.get("num_workers") or 0
    cpus = os.cpu_count() or 2
    suggested = min(max(2, workers * 2), max(cpus, 2)) if workers else min(4, max(cpus, 2))
    advice = f"try num_workers={suggested}" if suggested > workers else "the dataset itself is slow"
    device = str(last_step.get("device") or "")
    if device and not device.startswith("cpu") and not last_step.get("pin_memory"):
        advice += ", pin_memory=True"
    return f"{wait_fraction * 100:.0f} % of step time waiting for data — {advice}"


def _error_summary(error: dict | None, info: dict) -> dict | None:
    if error is not None:
        return {k: error.get(k) for k in ("type", "message", "file", "line")}
    return info.get("error")


def progress_message(record: dict, max_steps: int | None = None) -> tuple[str, int | None]:
    """``epoch 2/10 · step 340 · loss 0.412 · 1,830 samples/s`` and a percentage if known."""
    parts = []
    epoch, epochs = record.get("epoch"), record.get("epochs")
    if epoch:
        parts.append(f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}")
    parts.append(f"step {record.get('step', 0):,}")
    if isinstance(record.get("loss"), (int, float)):
        parts.append(f"loss {record['loss']:.4g}")
    if record.get("samples_per_s"):
        parts.append(f"{record['samples_per_s']:,.0f} samples/s")
    train_time = (record.get("data_wait_s") or 0) + (record.get("compute_s") or 0)
    if train_time > 0 and (record.get("step") or 0) >= MIN_STEPS_FOR_ADVICE:
        advice = input_bound_advice(record["data_wait_s"] / train_time, record)
        if advice:
            parts.append(advice.split(" — ")[0])
    return " · ".join(parts), progress_percentage(record, max_steps)


def progress_percentage(record: dict, max_steps: int | None = None) -> int | None:
    fractions = []
    if max_steps:
        fractions.append((record.get("step") or 0) / max_steps)
    epochs, batches = record.get("epochs"), record.get("batches")
    if epochs and record.get("epoch"):
        within = (record.get("batch") or 0) / batches if batches else 0.0
        fractions.append((record["epoch"] - 1 + within) / epochs)
    if not fractions:
        return None
    return max(0, min(100, int(max(fractions) * 100)))


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"  # 18,420, not 1.842e+04
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def render_markdown(summary: dict) -> str:
    """The summary as a markdown document (hover-style), also printed by the CLI."""
    script = os.path.basename(summary.get("script") or "?")
    lines = [f"### Run `{summary.get('run_id')}` — {script}", "",
             "| | |", "|---|---|"]
    duration = summary.get("duration_s")
    rows = [
        ("status", summary.get("status")),
        ("exit code", summary.get("exit_code")),
        ("duration", f"{duration:.1f} s" if duration is not None else None),
        ("device", summary.get("device")),
        ("epochs", summary.get("epochs")),
        ("steps", summary.get("steps")),
        ("steps/s", _rate_text(summary, "steps_per_s")),
        ("samples/s", _rate_text(summary, "samples_per_s")),
        ("final loss", summary.get("final_loss")),
        ("best loss", summary.get("best_loss")),
        ("last learning rate", summary.get("last_lr")),
    ]
    if _window_text(summary):
        rows.append(("rates measured over", _window_text(summary)))
    if summary.get("data_wait_fraction") is not None:
        rows.append(("waiting for data", f"{summary['data_wait_fraction'] * 100:.0f} %"))
    lines += [f"| {name} | {_fmt(value)} |" for name, value in rows]
    metrics = summary.get("metrics") or {}
    if metrics:
        lines += ["", "| metric | last | best | source |", "|---|---|---|---|"]
        lines += [f"| {name} | {_fmt(m.get('last'))} | {_fmt(m.get('best'))} | {m.get('source')} |"
                  for name, m in sorted(metrics.items())]
    if summary.get("input_bound"):
        lines += ["", f"**Input-bound:** {summary['input_bound']}"]
    error = summary.get("error")
    if error:
        where = f" at {error.get('file')}:{error.get('line')}" if error.get("file") else ""
        lines += ["", f"**Error:** {error.get('type')}: {error.get('message')}{where}"]
    return "\n".join(lines) + "\n"


def _rate_text(summary: dict, key: str):
    rate = summary.get(key)
    if rate is not None:
        return rate
    if key == "steps_per_s" and summary.get("steps"):
        return f"— (too few steps to measure; needs {MIN_STEPS_FOR_RATE})"
    return None


def _window_text(summary: dict) -> str | None:
    window = summary.get("measured") or {}
    if summary.get("steps_per_s") is None or not window.get("steps"):
        return None
    return f"{window['steps']:,} steps in {window['seconds']:.3g} s of the training loop"


def short_label(summary: dict | None, now: float | None = None) -> str | None:
    """``Last run: loss 0.41 · 3 min ago`` for code lenses."""
    if not summary:
        return None
    parts = []
    if summary.get("status") not in ("completed", None):
        parts.append(str(summary["status"]))
    loss = summary.get("final_loss")
    if isinstance(loss, (int, float)):
        parts.append(f"loss {loss:.3g}")
    started = summary.get("started_at")
    if started:
        parts.append(ago((now or time.time()) - started - (summary.get("duration_s") or 0)))
    return "Last run: " + " · ".join(parts) if parts else "Last run"


def ago(seconds: float) -> str:
    """`just now`, `3 min ago`, `2 h ago`, `4 d ago`."""
    seconds = max(0, seconds)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"
