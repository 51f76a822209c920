"""The runs API: count runs by status, find them with filters a page at a time (keyset
pagination, newest first), a flow's recent history.

Pages are keyed on ``(started_at, run_id)``: the cursor holds the last row's pair, the next page
is the rows before it in that order. No OFFSET and no total count: a page costs the same on the
first page and the ten-thousandth, on a database holding millions of runs (indexes in
``sql/migrations/0045_runs_api.sql``).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgflow_kombu.client.base import ClientBase, FlowRef, flow_slug_of
from pgflow_kombu.client.inputs import run_input
from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.types import Run, RunPage

__all__ = ["MAX_PAGE", "RUN_STATUSES", "HistoryMixin", "decode_cursor", "encode_cursor"]

RUN_STATUSES = ("started", "completed", "failed", "cancelled")
MAX_PAGE = 1000
"""The most runs one page holds."""


def encode_cursor(started_at: datetime, run_id: UUID) -> str:
    """The opaque cursor after the run ``(started_at, run_id)``."""
    raw = json.dumps([started_at.isoformat(), str(run_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The ``(started_at, run_id)`` a cursor holds; :class:`ConfigurationError` when it is not
    one that :func:`encode_cursor` made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, run_id = json.loads(raw)
        started_at = datetime.fromisoformat(when)
        if started_at.tzinfo is None:
            raise ValueError("no time zone")
        return started_at, UUID(run_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ConfigurationError(
            f"not a runs cursor: {cursor!r} (pass the 'next' of a previous page)"
        ) from None


def _check_moment(name: str, value: datetime | None) -> None:
    if value is None:
        return
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ConfigurationError(f"{name} must be a timezone-aware datetime, got {value!r}")


def _check_limit(limit: int, maximum: int = MAX_PAGE) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= maximum:
        raise ConfigurationError(f"limit must be an integer from 0 to {maximum}, got {limit!r}")


def _check_status(status: str | None) -> None:
    if status is not None and status not in RUN_STATUSES:
        raise ConfigurationError(f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")


class HistoryMixin(ClientBase):
    def count_runs(
        self,
        *,
        flow_slug: FlowRef | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, int]:
        """Runs per status (``started``, ``completed``, ``failed``, ``cancelled``; each key present),
        optionally of one flow and started in ``[since, until)``. Exact; an index-only count, so
        a bounded window (``since``) keeps it fast on very large histories."""
        _check_moment("since", since)
        _check_moment("until", until)
        params = {
            "flow_slug": None if flow_slug is None else flow_slug_of(flow_slug),
            "since": since,
            "until": until,
        }
        counts = dict.fromkeys(RUN_STATUSES, 0)
        with self.connection() as conn:
            rows = conn.execute(query("runs.count_runs"), params, prepare=False).fetchall()
        for part, status, n in rows:
            if part == "cancelled":  # counted under pgflow's status too: move them
                counts[status] -= n
                counts["cancelled"] += n
            else:
                counts[status] += n
        return counts

    def find_runs(
        self,
        *,
        flow_slug: FlowRef | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        input_contains: Any = None,
        after: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        """A page of runs, newest first (by ``started_at``, then ``run_id``).

        Filters: the flow, the status (``cancelled`` included), started in ``[since, until)``,
        an input containing ``input_contains`` (jsonb ``@>``: ``{"user": 7}`` matches inputs
        with that key and value). ``after`` is the ``next`` of the previous page. At most
        ``MAX_PAGE`` runs a page.
        """
        _check_limit(limit)
        return self._find_runs(
            flow_slug=flow_slug,
            status=status,
            since=since,
            until=until,
            input_contains=input_contains,
            after=after,
            limit=limit,
        )

    def _find_runs(
        self,
        *,
        flow_slug: FlowRef | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        input_contains: Any = None,
        after: str | None = None,
        limit: int,
    ) -> RunPage:
        _check_status(status)
        _check_moment("since", since)
        _check_moment("until", until)
        after_started_at, after_run_id = (None, None) if after is None else decode_cursor(after)
        params = {
            "flow_slug": None if flow_slug is None else flow_slug_of(flow_slug),
            "status": status,
            "since": since,
            "until": until,
            "input_contains": None if input_contains is None else Jsonb(run_input(input_contains)),
            "after_started_at": after_started_at,
            "after_run_id": after_run_id,
            "limit": limit + 1,
        }
        # Unprepared: planned with the filters given (see sql/queries/runs.sql).
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("runs.find_runs"), params, prepare=False).fetchall()
        runs = [Run.model_validate(r) for r in rows[:limit]]
        more = len(rows) > limit and runs
        last = runs[-1] if more else None
        cursor = None
        if last is not None and last.started_at is not None:
            cursor = encode_cursor(last.started_at, last.run_id)
        return RunPage(runs=runs, next=cursor)

    def list_runs(
        self,
        *,
        flow_slug: FlowRef | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """The newest runs first, at most ``limit``; optionally of one flow or status
        (the first page of :meth:`find_runs`)."""
        _check_limit(limit, maximum=2**31 - 2)
        return self._find_runs(flow_slug=flow_slug, status=status, limit=limit).runs

    def flow_history(self, flow_slug: FlowRef, *, limit: int = 50) -> list[Run]:
        """The most recent runs of one flow, newest first."""
        return self.find_runs(flow_slug=flow_slug, limit=limit).runs
