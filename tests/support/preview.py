"""Dashboards rendered without Grafana: each panel's queries from Prometheus's query_range,
drawn with matplotlib into one PNG per dashboard (a grid of its panels)."""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from tests.support.prometheus import (
    DEPLOYMENT,
    PrometheusServer,
    panel_queries,
    substitute,
)

MAX_LINES = 12
Lines = list[tuple[str, list[float], list[float]]]
"""(legend, seconds since start, values) of each series a panel draws."""


def _legend(template: str, labels: dict[str, str]) -> str:
    if not template:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


async def _panel_lines(
    prometheus: PrometheusServer, board: dict[str, Any], start: float, end: float
) -> dict[str, Lines]:
    step = max(1.0, (end - start) / 200)
    window = f"{max(15, int(step * 4))}s"
    whole = f"{max(15, int(end - start))}s"  # Grafana's $__range: the dashboard's time range
    panels: dict[str, Lines] = {}
    for title, legend, expr in panel_queries(board):
        lines = panels.setdefault(title, [])
        promql = substitute(expr, rate_interval=window, range_=whole, deployment=DEPLOYMENT)
        for series in await prometheus.query_range(promql, start, end, step):
            if len(lines) < MAX_LINES:
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                lines.append((_legend(legend, series["metric"])[:40], xs, ys))
    return panels


def _draw(title: str, panels: dict[str, Lines], path: Path) -> None:
    columns = 3
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(18, 3.6 * rows), squeeze=False)
    for ax, (panel_title, lines) in zip(axes.flat, panels.items(), strict=False):
        for legend, xs, ys in lines:
            ax.plot(xs, ys, label=legend, linewidth=1.2)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("seconds since Prometheus started scraping", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if lines:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.suptitle(f"{title} (deployment={DEPLOYMENT})", fontsize=14)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


async def render_dashboards(
    prometheus: PrometheusServer,
    boards: dict[str, dict[str, Any]],
    out: Path,
    *,
    start: float,
    end: float,
) -> list[Path]:
    """Write `<uid>.png` for each dashboard from query_range over [start, end]."""
    written = []
    for uid, board in boards.items():
        panels = await _panel_lines(prometheus, board, start, end)
        path = out / f"{uid}.png"
        await asyncio.to_thread(_draw, board["title"], panels, path)
        written.append(path)
    return written
