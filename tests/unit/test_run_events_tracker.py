"""Turning reads of a run into events (EventTracker), and the runs API's cursors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest

from pgflow_kombu.client.events import EventTracker
from pgflow_kombu.client.history import decode_cursor, encode_cursor
from pgflow_kombu.errors import ConfigurationError

T = datetime(2026, 1, 1, tzinfo=timezone.utc)
RUN = UUID("00000000-0000-4000-8000-000000000001")


def run(status: str = "started", at: datetime | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "status": status,
        "started_at": T,
        "completed_at": at if status == "completed" else None,
        "failed_at": at if status == "failed" else None,
        "cancelled_at": at if status == "cancelled" else None,
        "output": kw.get("output"),
        "output_omitted": False,
        "error_message": kw.get("error_message"),
    }


def step(
    slug: str,
    index: int,
    status: str,
    started: datetime | None,
    ended: datetime | None = None,
    **kw: Any,
) -> dict[str, Any]:
    return {
        "step_slug": slug,
        "step_index": index,
        "status": status,
        "started_at": started,
        "completed_at": ended if status == "completed" else None,
        "failed_at": ended if status == "failed" else None,
        "error_message": kw.get("error_message"),
        "output": kw.get("output"),
        "output_omitted": kw.get("output_omitted", False),
    }


def kinds(events: list[Any]) -> list[tuple[str, str | None]]:
    return [(e.event_type, e.step_slug) for e in events]


def test_one_transaction_orders_dependency_end_before_dependent_start() -> None:
    tracker = EventTracker(RUN)
    t1 = T + timedelta(seconds=1)
    # a completed and b started in one transaction (same timestamp); b listed first on purpose
    events = tracker.update(
        run(),
        [step("b", 1, "started", t1), step("a", 0, "completed", T, t1, output=1)],
    )
    assert kinds(events) == [
        ("run:started", None),
        ("step:started", "a"),
        ("step:completed", "a"),
        ("step:started", "b"),
    ]
    assert events[2].output == 1


def test_each_event_once_and_the_run_end_last() -> None:
    tracker = EventTracker(RUN)
    t1, t2 = T + timedelta(seconds=1), T + timedelta(seconds=2)
    first = tracker.update(run(), [step("a", 0, "started", T)])
    assert kinds(first) == [("run:started", None), ("step:started", "a")]
    assert tracker.update(run(), [step("a", 0, "started", T)]) == []
    assert not tracker.finished
    last = tracker.update(
        run("failed", t2, error_message="boom"),
        [step("a", 0, "completed", T, t1), step("b", 1, "failed", t2, t2, error_message="boom")],
    )
    assert kinds(last) == [
        ("step:completed", "a"),
        ("step:started", "b"),
        ("step:failed", "b"),
        ("run:failed", None),
    ]
    assert last[-1].error_message == "boom" and tracker.finished
    assert tracker.reported() == ["a"]


def test_a_cancelled_run_ends_with_run_cancelled() -> None:
    tracker = EventTracker(RUN)
    events = tracker.update(
        run("cancelled", T + timedelta(seconds=3)), [step("a", 0, "started", T)]
    )
    assert kinds(events)[-1] == ("run:cancelled", None)
    assert events[-1].status == "cancelled"


def test_cursor_round_trip_and_refusals() -> None:
    run_id = uuid4()
    at = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone(timedelta(hours=2)))
    assert decode_cursor(encode_cursor(at, run_id)) == (at, run_id)
    for bad in ["", "abc", encode_cursor(at, run_id)[:-3], "W1siYSJdXQ"]:
        with pytest.raises(ConfigurationError, match="not a runs cursor"):
            decode_cursor(bad)


def test_the_run_end_is_last_even_before_a_later_step_change() -> None:
    tracker = EventTracker(RUN)
    cancelled = T + timedelta(seconds=1)
    events = tracker.update(
        run("cancelled", cancelled),
        [step("a", 0, "completed", T, cancelled + timedelta(seconds=5), output=1)],
    )
    assert kinds(events)[-2:] == [("step:completed", "a"), ("run:cancelled", None)]
