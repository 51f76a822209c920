"""Server-side SVG: a flow's step graph (a DAG, coloured by step status on the run page), the
runs-per-minute chart and a run's timeline. Plain strings, escaped; no script, no asset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from markupsafe import Markup

from pgflow_kombu.client.insights import MinuteCounts

__all__ = ["dag_svg", "layers", "minutes_chart_svg", "timeline_svg"]

NODE_W, NODE_H, GAP_X, GAP_Y = 150, 40, 60, 24


def layers(steps: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each step's column: the length of the longest dependency path from a root step."""
    depth: dict[str, int] = {}
    for step in steps:  # steps come in definition order: dependencies first
        deps = step["deps"]
        depth[step["slug"]] = 1 + max((depth.get(d, 0) for d in deps), default=-1)
    return depth


def dag_svg(
    steps: Sequence[Mapping[str, Any]], statuses: Mapping[str, str] | None = None
) -> Markup:
    """The step graph, roots on the left. Each node is ``<g id="step-<slug>" class="step
    status-<status>">`` so that the page can recolour it from a live event; map steps carry the
    ``map`` class and a ``[ ]`` mark."""
    depth = layers(steps)
    rows: dict[int, int] = {}
    pos: dict[str, tuple[int, int]] = {}
    for step in steps:
        col = depth[step["slug"]]
        row = rows.get(col, 0)
        rows[col] = row + 1
        pos[step["slug"]] = (10 + col * (NODE_W + GAP_X), 10 + row * (NODE_H + GAP_Y))
    width = 20 + (max(depth.values(), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = 20 + max(rows.values(), default=1) * (NODE_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="step graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" class="arrow"/></marker>'
        "</defs>",
    ]
    for step in steps:
        x2, y2 = pos[step["slug"]]
        for dep in step["deps"]:
            x1, y1 = pos[dep]
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
            mid = (sx + ex) / 2
            parts.append(
                f'<path class="edge" d="M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}" '
                'marker-end="url(#arrow)"/>'
            )
    for step in steps:
        slug = step["slug"]
        x, y = pos[slug]
        status = (statuses or {}).get(slug, "none")
        is_map = step.get("step_type") == "map"
        label = escape(slug if len(slug) <= 18 else slug[:17] + "…")
        parts.append(
            f'<g id="step-{escape(slug)}" class="step status-{escape(status)}'
            f'{" map" if is_map else ""}" data-step="{escape(slug)}">'
            f"<title>{escape(slug)}{' (map)' if is_map else ''}: {escape(status)}</title>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{x + 10}" y="{y + 25}">{"[ ] " if is_map else ""}{label}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def minutes_chart_svg(
    counts: Sequence[MinuteCounts], *, width: int = 720, height: int = 180
) -> Markup:
    """Started / completed / failed runs per minute as three lines, oldest minute on the left."""
    top = max((max(c.started, c.completed, c.failed) for c in counts), default=0) or 1
    pad, n = 30, max(len(counts) - 1, 1)

    def points(kind: str) -> str:
        return " ".join(
            f"{pad + i * (width - 2 * pad) / n:.1f},"
            f"{height - pad - getattr(c, kind) * (height - 2 * pad) / top:.1f}"
            for i, c in enumerate(counts)
        )

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="runs per minute">',
        f'<line class="axis" x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}"/>',
        f'<line class="axis" x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}"/>',
        f'<text class="tick" x="2" y="{pad + 4}">{top}</text>',
        f'<text class="tick" x="2" y="{height - pad + 4}">0</text>',
    ]
    if counts:
        parts.append(
            f'<text class="tick" x="{pad}" y="{height - 8}">{counts[0].minute:%H:%M}</text>'
            f'<text class="tick" x="{width - pad - 30}" y="{height - 8}">'
            f"{counts[-1].minute:%H:%M}</text>"
        )
    for kind in ("started", "completed", "failed"):
        parts.append(f'<polyline class="line {kind}" points="{points(kind)}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def timeline_svg(
    bars: Sequence[tuple[str, str, datetime | None, datetime | None, datetime | None]],
    *,
    width: int = 720,
) -> Markup:
    """One row per task: ``(label, status, queued_at, started_at, ended_at)``; the wait in
    the queue drawn thin, the run time thick, on one time axis from the first queued task."""
    known = [t for b in bars for t in b[2:] if t is not None]
    if not known:
        return Markup("")
    t0, t1 = min(known), max(known)
    span = max((t1 - t0).total_seconds(), 0.001)
    left, row_h = 160, 20
    height = 20 + row_h * len(bars)

    def x(t: datetime) -> float:
        return left + (t - t0).total_seconds() / span * (width - left - 10)

    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="timeline">',
        f'<text class="tick" x="{left}" y="12">0 s</text>',
        f'<text class="tick" x="{width - 60}" y="12">{span:.3g} s</text>',
    ]
    for i, (label, status, queued, started, ended) in enumerate(bars):
        y = 18 + i * row_h
        parts.append(f'<text class="tick" x="2" y="{y + 12}">{escape(label[:24])}</text>')
        if queued is not None:
            end = started or ended or t1
            parts.append(
                f'<rect class="wait" x="{x(queued):.1f}" y="{y + 7}" '
                f'width="{max(x(end) - x(queued), 1):.1f}" height="3"/>'
            )
        if started is not None:
            end = ended or t1
            parts.append(
                f'<rect class="bar status-{escape(status)}" x="{x(started):.1f}" y="{y + 2}" '
                f'width="{max(x(end) - x(started), 2):.1f}" height="12"><title>'
                f"{escape(label)}: {(end - started).total_seconds():.3f} s</title></rect>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))
