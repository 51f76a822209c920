"""Rendering for the CLI: plain tables, JSON for scripts, a live progress line while waiting."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click
from pydantic import BaseModel

from pgflow_kombu.types import Run, StepTask

__all__ = [
    "PROGRESS_EVERY",
    "Progress",
    "emit_json",
    "emit_run",
    "listing",
    "options_text",
    "progress_line",
    "short",
    "show_run",
    "table",
    "when",
]

T = TypeVar("T")


def emit_json(data: Any) -> None:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    elif isinstance(data, list):
        data = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    click.echo(json.dumps(data, indent=2, default=str))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def listing(
    items: Sequence[T], as_json: bool, headers: Sequence[str], row: Callable[[T], Sequence[Any]]
) -> None:
    """``items`` as JSON, or as a table of one ``row(item)`` each."""
    if as_json:
        emit_json(items)
    else:
        table(headers, [row(item) for item in items])


def when(moment: datetime | None) -> str:
    """A timestamp to the second, or "" for none."""
    return moment.isoformat(timespec="seconds") if moment else ""


def options_text(options: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items())


def short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def emit_run(run: Run, as_json: bool) -> None:
    emit_json(run) if as_json else show_run(run)


def show_run(run: Run) -> None:
    click.echo(f"run      {run.run_id}")
    click.echo(f"flow     {run.flow_slug}")
    click.echo(f"status   {run.status}")
    click.echo(f"input    {short(run.input)}")
    if run.status == "completed":
        click.echo(f"output   {short(run.output)}")
    if run.error_message:
        click.echo(f"error    {run.error_message}")
    click.echo("")
    table(
        ["step", "status", "tasks", "attempts", "error"],
        [
            (
                s.step_slug,
                s.status,
                _task_counts(s.tasks, s.initial_tasks),
                max((t.attempts_count for t in s.tasks), default=0),
                s.error_message or _last_error(s.tasks),
            )
            for s in run.step_states
        ],
    )


def _last_error(tasks: Sequence[StepTask]) -> str:
    """The error of a step still retrying: its tasks keep their last attempt's error while the
    step has none (pgflow sets the step's only when it fails)."""
    failed = [t for t in tasks if t.error_message and t.status != "completed"]
    if not failed:
        return ""
    last = max(failed, key=lambda t: (t.failed_at or t.queued_at or t.started_at, t.task_index))
    where = f"task {last.task_index}, " if len(tasks) > 1 else ""
    return f"retrying ({where}attempt {last.attempts_count} failed): {last.error_message}"


def _task_counts(tasks: Sequence[Any], initial: int | None) -> str:
    done = sum(1 for t in tasks if t.status == "completed")
    total = initial if initial is not None else len(tasks)
    return f"{done}/{total if total is not None else '?'}"


def progress_line(run: Run) -> str:
    parts = [
        f"{s.step_slug}:{_symbol(s.status)}{_task_counts(s.tasks, s.initial_tasks)}"
        for s in run.step_states
    ]
    return f"{run.status:<9} " + "  ".join(parts)


def _symbol(status: str) -> str:
    return {"created": "·", "started": "▸", "completed": "✓", "failed": "✗", "cancelled": "⊘"}.get(
        status, "?"
    )


PROGRESS_EVERY = 5.0
"""Seconds between progress lines when stderr is not a terminal (a log, CI)."""


class Progress:
    """On a terminal, one line redrawn in place (``interval`` 0.2 s); elsewhere a line every
    :data:`PROGRESS_EVERY` seconds, so that a long wait in a log or CI is not silent."""

    def __init__(self) -> None:
        self.live = sys.stderr.isatty()
        self.interval = 0.2 if self.live else PROGRESS_EVERY
        self._started = time.monotonic()
        self._next = self._started + PROGRESS_EVERY
        self._last = ""

    def update(self, run: Run) -> None:
        line = progress_line(run)
        if self.live:
            if line != self._last:
                click.echo("\r\x1b[2K" + line, nl=False, err=True)
                self._last = line
            return
        now = time.monotonic()
        if now >= self._next and not run.finished:
            elapsed = now - self._started
            click.echo(f"waiting for run {run.run_id} ({elapsed:.0f} s): {line}", err=True)
            self._next = now + PROGRESS_EVERY

    def done(self) -> None:
        if self.live and self._last:
            click.echo("", err=True)
