"""The seam between pure flow definitions and whatever starts runs in a database.

``flows/`` never talks to PostgreSQL. ``Flow.start`` and ``Task.delay``/``apply_async`` hand the
flow and its JSON input to a :class:`Dispatcher` that the app injects (``flow.bind(dispatcher)``);
the dispatcher makes sure the flow exists in the database and calls ``pgflow.start_flow``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pgflow_kombu.errors import FlowInputError

if TYPE_CHECKING:
    from pgflow_kombu.flows.flow import Flow
    from pgflow_kombu.flows.jsondata import Json

__all__ = ["Dispatcher", "check_schedule"]


class Dispatcher(Protocol):
    """Starts runs of flows; implemented by the app on top of the client.

    ``input`` is already plain JSON. At most one of ``delay_seconds`` (>= 0) and
    ``scheduled_at`` (an aware or naive datetime, compared as an instant; past means now) is
    given; both ask that the run's first tasks become visible later. Returns the app's run
    handle (``run_id``, ``wait()``, ...).
    """

    def start(
        self,
        flow: Flow,
        input: Json,
        *,
        delay_seconds: float | None = None,
        scheduled_at: datetime | None = None,
    ) -> Any: ...


def check_schedule(delay_seconds: float | None, scheduled_at: datetime | None) -> None:
    """Raise :class:`FlowInputError` for a negative delay, or both a delay and a time."""
    if delay_seconds is not None and scheduled_at is not None:
        raise FlowInputError("give either a delay (countdown) or a time (eta), not both")
    if delay_seconds is not None:
        if isinstance(delay_seconds, bool) or not isinstance(delay_seconds, (int, float)):
            raise FlowInputError(f"delay must be a number of seconds, got {delay_seconds!r}")
        if not delay_seconds >= 0:
            raise FlowInputError(f"delay must be >= 0 seconds, got {delay_seconds}")
    if scheduled_at is not None and not isinstance(scheduled_at, datetime):
        raise FlowInputError(f"scheduled time must be a datetime, got {scheduled_at!r}")
