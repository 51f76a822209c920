"""The seam between pure flow definitions and whatever starts runs in a database.

``flows/`` never talks to PostgreSQL. ``Flow.start`` and ``Task.delay``/``apply_async`` hand the
flow and its JSON input to a :class:`Dispatcher` that the app injects (``flow.bind(dispatcher)``);
the dispatcher makes sure the flow exists in the database and calls ``pgflow.start_flow``.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from pgflow_kombu.errors import FlowInputError
from pgflow_kombu.flows.options import INT4_MAX

if TYPE_CHECKING:
    from pgflow_kombu.flows.flow import Flow
    from pgflow_kombu.flows.jsondata import Json

__all__ = ["MAX_DELAY", "Dispatcher", "check_schedule", "schedule_delay"]


class Dispatcher(Protocol):
    """Starts runs of flows; implemented by the app on top of the client.

    ``input`` is already plain JSON. At most one of ``delay_seconds`` (>= 0) and
    ``scheduled_at`` (a timezone-aware datetime, compared as an instant; past means now) is
    given, both checked by :func:`check_schedule`; both ask that the run's first tasks become
    visible later. ``priority`` overrides the flow's default priority. ``idempotency_key``
    deduplicates starts (the first run's handle comes back for a key already used). Returns the
    app's run handle (``run_id``, ``wait()``, ...).
    """

    def start(
        self,
        flow: Flow,
        input: Json,
        *,
        delay_seconds: float | None = None,
        scheduled_at: datetime | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
    ) -> Any: ...


MAX_DELAY = INT4_MAX
"""The longest delay in seconds (about 68 years): pgmq takes it as an ``integer``."""


def check_schedule(
    delay_seconds: float | None, scheduled_at: datetime | None, *, required: bool = False
) -> None:
    """Raise :class:`FlowInputError` for an unusable delay or time (see :func:`schedule_delay`),
    or for neither when ``required`` (``enqueue_in`` / ``enqueue_at``). Run before anything is
    written."""
    if required and delay_seconds is None and scheduled_at is None:
        raise FlowInputError("a delay in seconds or a timezone-aware datetime is needed, got None")
    schedule_delay(delay_seconds, scheduled_at)


def schedule_delay(
    delay_seconds: float | None, scheduled_at: datetime | None, *, now: datetime | None = None
) -> int:
    """Whole seconds to hold a run's first tasks (pgmq's visibility has 1 s resolution).

    The one check of every way to start a run later (``apply_async``, ``enqueue_in``/``_at``,
    the client, the CLI): a delay is a number of seconds from 0 to :data:`MAX_DELAY` (``True``
    is not one), a time a timezone-aware datetime at most that far ahead (past times run now),
    and not both. Raises :class:`FlowInputError` naming the bad value.
    """
    if delay_seconds is not None and scheduled_at is not None:
        raise FlowInputError(
            f"give either a delay (countdown) or a time (eta), not both "
            f"(got {delay_seconds!r} and {scheduled_at!r})"
        )
    if scheduled_at is not None:
        if not isinstance(scheduled_at, datetime):
            raise FlowInputError(
                f"scheduled time must be a timezone-aware datetime, got {scheduled_at!r}"
            )
        if scheduled_at.tzinfo is None or scheduled_at.utcoffset() is None:
            raise FlowInputError(
                f"scheduled time {scheduled_at.isoformat()} is naive: pass a timezone-aware "
                "datetime (e.g. datetime.now(timezone.utc) + timedelta(minutes=5))"
            )
        seconds = (scheduled_at - (now or datetime.now(timezone.utc))).total_seconds()
        if seconds > MAX_DELAY:
            raise FlowInputError(
                f"scheduled time {scheduled_at.isoformat()} is too far ahead: at most "
                f"{MAX_DELAY} s (about 68 years) from now"
            )
        return max(0, math.ceil(seconds))
    if delay_seconds is None:
        return 0
    if (
        isinstance(delay_seconds, bool)
        or not isinstance(delay_seconds, (int, float))
        or math.isnan(delay_seconds)
    ):
        raise FlowInputError(f"delay must be a number of seconds, got {delay_seconds!r}")
    if delay_seconds < 0:
        raise FlowInputError(f"delay must be >= 0 seconds, got {delay_seconds}")
    if delay_seconds > MAX_DELAY:
        raise FlowInputError(
            f"delay must be at most {MAX_DELAY} seconds (about 68 years), got {delay_seconds}"
        )
    return math.ceil(delay_seconds)
