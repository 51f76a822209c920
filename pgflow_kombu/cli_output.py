"""Rendering for the CLI: plain tables, JSON for scripts, a live progress line while waiting."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click
from pydantic import BaseModel

from pgflow_kombu.types import Run

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
                s.error_message or "",
            )
            for s in run.step_states
        ],
    )


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


class Progress:
    """One line redrawn in place on a terminal; nothing when stderr is not a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self._last = ""

    def update(self, run: Run) -> None:
        if not self.enabled:
            return
        line = progress_line(run)
        if line != self._last:
            click.echo("\r\x1b[2K" + line, nl=False, err=True)
            self._last = line

    def done(self) -> None:
        if self.enabled and self._last:
            click.echo("", err=True)
