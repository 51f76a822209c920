"""Live run and step events (client.events / handle.events / aevents) with a real worker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from pgflow_kombu.client import Client
from pgflow_kombu.db.connect import connect
from pgflow_kombu.errors import RunNotFound, RunTimeout
from pgflow_kombu.flows import Flow
from pgflow_kombu.handles import RunHandle
from pgflow_kombu.types import RunEvent
from pgflow_kombu.worker import PgmqSource, Worker
from tests.support.sql import test_query

# -- flows -------------------------------------------------------------------------------------

numbers = Flow("numbers", base_delay=0)
GATE = threading.Event()


@numbers.step
def fetch(run: int) -> list[int]:
    GATE.wait(30)  # the test reads the first events while this step runs
    return list(range(1, run + 1))


@numbers.map(over="fetch")
def square(x: int) -> int:
    return x * x


@numbers.step
def total(square: list[int]) -> int:
    return sum(square)


breaks = Flow("breaks", max_attempts=1, base_delay=0)


@breaks.step
def ok(run: Any) -> str:
    return "x" * 10_000  # over the event output limit


@breaks.step
def boom(ok: str) -> str:
    raise RuntimeError("boom at the second step")


big = Flow("big", base_delay=0)


@big.step
def blob(run: int) -> str:
    return "x" * run  # compresses well: stored far smaller than its text


gated = Flow("gated", base_delay=0)


@gated.step
def first(run: dict[str, Any]) -> int:
    return 1


@gated.step(if_={"run": {"plan": "pro"}})
def extra(first: int) -> int:
    return first + 1


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    c = Client(db_url)
    yield c
    c.close()


@pytest.fixture
def worker(db_url: str) -> Iterator[Worker]:
    GATE.clear()
    w = Worker(
        {"numbers": numbers, "breaks": breaks, "gated": gated, "big": big},
        db_url,
        source=PgmqSource(db_url, poll_interval=0.05),
        heartbeat_interval=0.5,
    )
    w.start()
    yield w
    GATE.set()
    w.stop(5)


def kinds(events: list[RunEvent]) -> list[tuple[str, str | None]]:
    return [(e.event_type, e.step_slug) for e in events]


NUMBERS_EVENTS = [
    ("run:started", None),
    ("step:started", "fetch"),
    ("step:completed", "fetch"),
    ("step:started", "square"),
    ("step:completed", "square"),
    ("step:started", "total"),
    ("step:completed", "total"),
    ("run:completed", None),
]


def check_numbers(events: list[RunEvent], run_id: Any) -> None:
    assert kinds(events) == NUMBERS_EVENTS
    assert {e.run_id for e in events} == {run_id}
    by_kind = {(e.event_type, e.step_slug): e for e in events}
    assert by_kind[("step:completed", "fetch")].output == [1, 2, 3]
    assert by_kind[("step:completed", "square")].output == [1, 4, 9]
    assert by_kind[("step:completed", "total")].output == 14
    assert by_kind[("run:completed", None)].output == {"total": 14}
    assert all(e.status == e.event_type.split(":")[1] for e in events)
    assert all(e.at is not None for e in events)
    stamps = [e.at for e in events]
    assert stamps == sorted(stamps)  # type: ignore[type-var]


# -- tests -------------------------------------------------------------------------------------


def test_events_arrive_as_the_run_progresses(client: Client, worker: Worker) -> None:
    handle = RunHandle(client, client.start_flow(numbers, 3), "numbers")
    stream = handle.events(timeout=60)
    first = [next(stream), next(stream)]
    # Both came while the first step is held: they are live, not read after the run ended.
    assert kinds(first) == NUMBERS_EVENTS[:2]
    assert client.get_run(handle.run_id).status == "started"
    GATE.set()
    rest = list(stream)
    check_numbers(first + rest, handle.run_id)
    with connect(client.url) as conn:  # the watch is gone once the iterator ended
        assert conn.execute(test_query("events_watch_count")).fetchone() == (0,)


def test_async_events_of_a_failing_run_with_a_large_output(client: Client, worker: Worker) -> None:
    run_id = client.start_flow(breaks, None)

    async def collect() -> list[RunEvent]:
        return [event async for event in client.aevents(run_id, timeout=60)]

    events = asyncio.run(collect())
    assert kinds(events) == [
        ("run:started", None),
        ("step:started", "ok"),
        ("step:completed", "ok"),
        ("step:started", "boom"),
        ("step:failed", "boom"),
        ("run:failed", None),
    ]
    big = events[2]
    assert big.output is None and big.output_omitted
    assert "boom at the second step" in (events[4].error_message or "")
    assert events[5].status == "failed" and "boom" in (events[5].error_message or "")


def test_async_events_stream_live(client: Client, worker: Worker) -> None:
    run_id = client.start_flow(numbers, 3)

    async def collect() -> list[RunEvent]:
        got: list[RunEvent] = []
        async for event in RunHandle(client, run_id, "numbers").aevents(timeout=60):
            got.append(event)
            if len(got) == 2:  # held at the first step until now
                GATE.set()
        return got

    check_numbers(asyncio.run(collect()), run_id)


def test_a_finished_run_replays_its_events_and_ends(client: Client, worker: Worker) -> None:
    GATE.set()
    run_id = client.start_flow(numbers, 3)
    client.wait(run_id, timeout=60)
    check_numbers(list(client.events(run_id)), run_id)


def test_unknown_run_and_timeout(client: Client) -> None:
    with pytest.raises(RunNotFound):
        list(client.events(uuid4()))
    client.compile_flow(numbers.shape())
    held = client.start_flow(numbers, 3)  # no worker: it never finishes
    stream = client.events(held, timeout=0.5, poll_interval=0.1)
    assert kinds([next(stream), next(stream)]) == NUMBERS_EVENTS[:2]
    with pytest.raises(RunTimeout):
        next(stream)


def test_an_unwatched_run_sends_no_notification(client: Client, worker: Worker) -> None:
    GATE.set()
    with connect(client.url) as listener:
        listener.execute(test_query("events_listen"))
        run_id = client.start_flow(numbers, 3)
        client.wait(run_id, timeout=60)
        assert list(listener.notifies(timeout=0.5)) == []
        # The same changes of a watched run do notify (the listener proves it can hear them).
        GATE.clear()
        watched = client.start_flow(numbers, 3)
        events = []
        for event in client.events(watched, timeout=60):
            events.append(event)
            GATE.set()  # after the watch is in place
        assert kinds(events) == NUMBERS_EVENTS
        assert {n.payload for n in listener.notifies(timeout=0.5)} == {str(watched)}


def test_a_skipped_conditional_step_gives_step_skipped(client: Client, worker: Worker) -> None:
    run_id = client.start_flow(gated, {"plan": "free"})
    events = list(client.events(run_id, timeout=60))
    assert kinds(events) == [
        ("run:started", None),
        ("step:started", "first"),
        ("step:completed", "first"),
        ("step:skipped", "extra"),
        ("run:completed", None),
    ]
    assert events[3].status == "skipped" and events[3].skip_reason == "condition_unmet"


def test_a_change_whose_writer_ran_before_the_watch_is_still_seen(
    client: Client, db_url: str
) -> None:
    client.compile_flow(numbers.shape())
    run_id = client.start_flow(numbers, 3)
    with connect(db_url, autocommit=False) as writer:
        # Its trigger runs now, before the watch exists: this change will send no notification.
        writer.execute(test_query("events_fail_run"), {"run_id": run_id})
        stream = client.events(run_id, timeout=60, poll_interval=30)
        assert kinds([next(stream), next(stream)]) == NUMBERS_EVENTS[:2]  # read before commit
        writer.commit()
    began = time.monotonic()
    rest = list(stream)
    assert kinds(rest) == [("run:failed", None)]
    # Seen by one of the short first re-reads, long before the 30 s poll_interval.
    assert time.monotonic() - began < 20


@pytest.mark.parametrize(("size", "omitted"), [(8000, False), (20_000, True)])
def test_outputs_over_the_limit_are_left_out_of_run_and_step_events(
    client: Client, worker: Worker, size: int, omitted: bool
) -> None:
    events = list(client.events(client.start_flow(big, size), timeout=60))
    step_done, run_done = events[-2], events[-1]
    assert kinds([step_done, run_done]) == [("step:completed", "blob"), ("run:completed", None)]
    assert (step_done.output_omitted, run_done.output_omitted) == (omitted, omitted)
    if omitted:
        assert step_done.output is None and run_done.output is None
    else:
        assert step_done.output == "x" * size and run_done.output == {"blob": "x" * size}


def test_two_watchers_of_one_run_each_get_every_event(client: Client, worker: Worker) -> None:
    run_id = client.start_flow(numbers, 3)
    got: dict[str, list[RunEvent]] = {}
    both_reading = threading.Barrier(3)

    def watch(name: str) -> None:
        events: list[RunEvent] = []
        for event in client.events(run_id, timeout=60):
            events.append(event)
            if len(events) == 2:  # both have read the run while its first step is held
                both_reading.wait(30)
        got[name] = events

    threads = [threading.Thread(target=watch, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    both_reading.wait(30)
    GATE.set()
    for thread in threads:
        thread.join(60)
    check_numbers(got["one"], run_id)
    check_numbers(got["two"], run_id)
    with connect(client.url) as conn:
        assert conn.execute(test_query("events_watch_count")).fetchone() == (0,)
