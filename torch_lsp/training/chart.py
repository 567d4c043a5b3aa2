"""The run's chart: loss and user metrics over steps, one panel each, drawn with Pillow.

Pillow comes with torchvision; importing it is cheap and it does not import torch, so the
server can draw charts itself.
"""

from __future__ import annotations

import os
import threading

from pathlib import Path

from torch_lsp.training.summary import _BOOKKEEPING

WIDTH, PANEL_HEIGHT = 900, 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 80, 20, 34, 40
MAX_PANELS = 5
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def series_from_records(records: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """{name: [(step, value), ...]}: the loss first, then each user metric."""
    series: dict[str, list[tuple[float, float]]] = {"loss": []}
    for record in records:
        kind = record.get("kind")
        if kind == "step" and isinstance(record.get("loss"), (int, float)):
            series["loss"].append((record.get("step") or 0, record["loss"]))
        elif kind == "metric" and isinstance(record.get("value"), (int, float)):
            name = record["name"]
            if name.lower() in _BOOKKEEPING:
                continue
            key = name if name != "loss" or not series["loss"] else f"{name} ({record.get('source')})"
            series.setdefault(key, []).append((record.get("step") or 0, record["value"]))
    return {name: points for name, points in series.items() if points}


def render_chart(records: list[dict], path: Path, title: str = "") -> Path | None:
    """Write a PNG; None when there is nothing to plot or Pillow is missing."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        return None
    series = list(series_from_records(records).items())[:MAX_PANELS]
    if not series:
        return None
    image = Image.new("RGB", (WIDTH, PANEL_HEIGHT * len(series)), "white")
    draw = ImageDraw.Draw(image)
    font = _font(ImageFont)
    for index, (name, points) in enumerate(series):
        top = index * PANEL_HEIGHT
        label = f"{title} — {name}" if title and index == 0 else name
        _draw_panel(draw, font, top, label, points, COLORS[index % len(COLORS)])
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer: the end of a run and a `metrics` request may draw the chart at once.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp.png")
    image.save(tmp, format="PNG")
    tmp.replace(path)
    return path


def _font(image_font):
    try:
        return image_font.load_default(size=13)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return image_font.load_default()


def _draw_panel(draw, font, top: int, label: str, points, color) -> None:
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    plot_top, plot_bottom = top + MARGIN_TOP, top + PANEL_HEIGHT - MARGIN_BOTTOM
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x_min, x_max = _padded_range(min(xs), max(xs))
    y_min, y_max = _padded_range(min(ys), max(ys))

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_min) / (x_max - x_min) * (right - left)
        py = plot_bottom - (y - y_min) / (y_max - y_min) * (plot_bottom - plot_top)
        return px, py

    draw.text((left, top + 8), label, fill="black", font=font)
    draw.rectangle([left, plot_top, right, plot_bottom], outline=(160, 160, 160))
    for fraction in (0.0, 0.5, 1.0):
        y_value = y_min + fraction * (y_max - y_min)
        _, py = to_pixel(x_min, y_value)
        draw.line([left, py, right, py], fill=(230, 230, 230))
        draw.text((6, py - 7), f"{y_value:.4g}", fill="black", font=font)
        x_value = x_min + fraction * (x_max - x_min)
        px, _ = to_pixel(x_value, y_min)
        draw.text((px - 12, plot_bottom + 6), f"{x_value:.0f}", fill="black", font=font)
    draw.text((right - 40, plot_bottom + 22), "step", fill=(90, 90, 90), font=font)
    pixels = [to_pixel(x, y) for x, y in points]
    if len(pixels) == 1:
        x, y = pixels[0]
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
    else:
        draw.line(pixels, fill=color, width=2)


def _padded_range(low: float, high: float) -> tuple[float, float]:
    if high - low < 1e-12:
        pad = abs(low) * 0.05 or 1.0
        return low - pad, high + pad
    return low, high
