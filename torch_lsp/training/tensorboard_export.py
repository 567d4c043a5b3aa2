"""TensorBoard event files from a run's records, written only when ``tensorboard`` is importable.

Uses tensorboard's own event writer (no torch, no TensorFlow), so the server can write them.
Scalars: ``train/loss``, ``train/lr`` (first param group), ``train/samples_per_s`` and every
user metric under its own name.
"""

from __future__ import annotations

from pathlib import Path


def scalars_from_records(records: list[dict]):
    """(tag, step, value, wall_time) for everything worth plotting."""
    for record in records:
        kind, step, wall = record.get("kind"), record.get("step") or 0, record.get("time") or 0.0
        if kind == "step":
            for tag, value in (("train/loss", record.get("loss")),
                               ("train/lr", (record.get("lr") or [None])[0]),
                               ("train/samples_per_s", record.get("samples_per_s"))):
                if isinstance(value, (int, float)):
                    yield tag, step, float(value), wall
        elif kind == "metric" and isinstance(record.get("value"), (int, float)):
            yield record["name"], step, float(record["value"]), wall


def export_tensorboard(records: list[dict], directory: Path) -> str | None:
    """Write one event file; returns its folder, or None when tensorboard is not installed."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except Exception:  # ImportError, or a broken install: event files are optional
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        writer = EventFileWriter(str(directory))
        for tag, step, value, wall in scalars_from_records(records):
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            writer.add_event(event_pb2.Event(wall_time=wall, step=step, summary=summary))
        writer.close()
    except Exception:
        return None
    return str(directory)
