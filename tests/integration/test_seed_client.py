"""The seeds' client functions: enqueue / enqueue_in / enqueue_at on the app and the Client,
their argument checks (the same as ``apply_async``'s), and the wait's fallback poll."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from pgflow_kombu import Client, PgFlow
from pgflow_kombu.db.connect import connect
from pgflow_kombu.errors import FlowInputError
from pgflow_kombu.flows import Task
from tests.support.sql import test_query
from tests.support.sqlworker import queue_messages

LATER = datetime.now(timezone.utc) + timedelta(days=1)


@pytest.fixture
def app(db_url: str) -> Iterator[PgFlow]:
    application = PgFlow(db_url)
    yield application
    application.close()


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    c = Client(db_url)
    yield c
    c.close()


def remind_task(app: PgFlow) -> Task[[str], str]:
    @app.task
    def remind(user: str) -> str:
        return f"hello {user}"

    return remind


def row_counts(db_url: str) -> tuple[int, ...]:
    with connect(db_url) as conn:
        row = conn.execute(test_query("seeds_row_counts")).fetchone()
    assert row is not None
    return tuple(row)


def test_the_client_enqueues_now_later_and_at_a_time(client: Client, db_url: str) -> None:
    assert client.upsert_flow("remind", steps=[{"slug": "remind"}]) == {
        "status": "compiled",
        "differences": [],
    }
    now = client.enqueue("remind", {"user": "ada"})
    later = client.enqueue_in("remind", {"user": "bob"}, 90)
    at = client.enqueue_at("remind", {"user": "cy"}, datetime.now(timezone.utc) + timedelta(0, 200))
    past = client.enqueue_at("remind", {"user": "di"}, datetime(2000, 1, 1, tzinfo=timezone.utc))
    also_later = client.enqueue("remind", {"user": "ed"}, delay_seconds=30)
    delays = {m[1]["run_id"]: m[3] for m in queue_messages(db_url, "remind")}
    assert delays[str(now)] <= 0 and delays[str(past)] <= 0
    assert 88 <= delays[str(later)] <= 90
    assert 198 <= delays[str(at)] <= 200
    assert 28 <= delays[str(also_later)] <= 30
    assert client.get_run(later).input == {"user": "bob"}


# Each bad schedule with a fragment the error must show (the value, or what was wrong with it).
BAD_DELAYS: list[tuple[Any, str]] = [
    ("60", "'60'"),
    (True, "True"),
    (math.inf, "inf"),
    (-math.inf, "-inf"),
    (math.nan, "nan"),
    (-1, "-1"),
    (2**40, str(2**40)),
    (None, "None"),  # enqueue_in needs a delay; an explicit None is no number of seconds
]
BAD_TIMES: list[tuple[Any, str]] = [
    ("2030-01-01T00:00:00Z", "'2030-01-01T00:00:00Z'"),
    (1700000000, "1700000000"),
    (datetime(2030, 1, 1), "2030-01-01T00:00:00 is naive"),
    (datetime(9999, 1, 1, tzinfo=timezone.utc), "9999-01-01T00:00:00+00:00"),
    (None, "None"),  # enqueue_at needs a time
]


def entry_points(
    app: PgFlow, client: Client, task: Task[Any, Any]
) -> dict[str, Callable[..., Any]]:
    """Every way to start a delayed job, each taking (delay=..., at=...)."""
    data = {"user": "x"}
    return {
        "app.enqueue": lambda delay=None, at=None: app.enqueue(
            task, data, delay_seconds=delay, scheduled_at=at
        ),
        "app.enqueue_in": lambda delay=None, at=None: app.enqueue_in(task, data, delay),
        "app.enqueue_at": lambda delay=None, at=None: app.enqueue_at(task, data, at),
        "app.start_flow": lambda delay=None, at=None: app.start_flow(
            task, data, delay_seconds=delay, scheduled_at=at
        ),
        "apply_async": lambda delay=None, at=None: task.apply_async(
            kwargs=data, countdown=delay, eta=at
        ),
        "client.enqueue": lambda delay=None, at=None: client.enqueue(
            task.slug, data, delay_seconds=delay, scheduled_at=at
        ),
        "client.enqueue_in": lambda delay=None, at=None: client.enqueue_in(task.slug, data, delay),
        "client.enqueue_at": lambda delay=None, at=None: client.enqueue_at(task.slug, data, at),
    }


def test_every_delayed_start_checks_its_schedule_as_apply_async_does(
    app: PgFlow, client: Client, db_url: str
) -> None:
    task = remind_task(app)
    calls = entry_points(app, client, task)
    before = row_counts(db_url)
    assert before == (0, 0, 0, 0, 0)  # nothing compiled yet: a refused call must not compile it
    checked = 0
    for name, call in calls.items():
        takes_delay = not name.endswith("_at")
        takes_time = not name.endswith("_in")
        for value, shown in BAD_DELAYS if takes_delay else []:
            if value is None and takes_time:
                continue  # None means "no delay" where a time may be given instead
            with pytest.raises(FlowInputError) as refused:
                call(delay=value)
            assert shown in str(refused.value), (name, value, str(refused.value))
            checked += 1
        for value, shown in BAD_TIMES if takes_time else []:
            if value is None and takes_delay:
                continue
            with pytest.raises(FlowInputError) as refused:
                call(at=value)
            assert shown in str(refused.value), (name, value, str(refused.value))
            checked += 1
        if takes_delay and takes_time:
            with pytest.raises(FlowInputError, match="not both"):
                call(delay=5, at=LATER)
            checked += 1
        assert row_counts(db_url) == before, name
    assert checked == 74
    # The same entry points still work with good values afterwards.
    for name, call in calls.items():
        if name.endswith("_at"):
            call(at=datetime(2000, 1, 1, tzinfo=timezone.utc))
        else:
            call(delay=0)
    assert row_counts(db_url)[2] == len(calls)


def test_a_wait_notices_a_missed_notification_within_the_fallback_poll(
    client: Client, db_url: str
) -> None:
    assert client.poll_interval == 0.5  # the seeds' poll_interval default (500 ms)
    client.upsert_flow("quiet", steps=[{"slug": "only"}])
    run_id = client.start_flow("quiet", {})
    with connect(db_url) as conn:
        conn.execute(test_query("seeds_silence_run_notifications"))
    finished_at: list[float] = []
    result: list[Any] = []

    def waiter() -> None:
        result.append(client.wait(run_id, timeout=30))
        finished_at.append(time.monotonic())

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(1.0)  # the waiter has read the run as started and sleeps until woken or polling
    assert thread.is_alive()
    with connect(db_url) as listener, connect(db_url) as conn:
        listener.execute(test_query("seeds_listen_runs"))
        conn.execute(test_query("seeds_finish_run"), {"run_id": run_id})
        finished = time.monotonic()
        # No notification was sent: only the poll can end the wait.
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
    thread.join(30)
    assert result and result[0].status == "completed"
    # A 5 s poll (the former default) would have ended the wait >= 4 s after the finish.
    assert finished_at[0] - finished < 3.0
