"""pgflow:// on kombu's event loop (the Hub a Celery worker runs): what wakes a consumer, and
where on the loop messages reach it.

Celery's prefork pool holds the jobs it was handed and, on its own tick, asks the loop to write
them to a child process. Ticks run in no set order, so a message must reach the consumer in a
callback that runs after the loop's poll, or the job would wait in the pool until a timer ends a
later poll. ``PoolLike`` below behaves that way; a poll that ends with no event is such a wait.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import kombu
import psycopg
import pytest
from kombu.asynchronous import Hub

import pgflow_kombu  # noqa: F401 - registers the pgflow:// alias
from pgflow_kombu.transport.transport import RECHECK_DELAY
from tests.celery_app.urls import broker_url

QUEUE = "event_loop_q"
# Upper bound of one poll: a missed wake-up fails the test instead of hanging it.
WAIT_CAP = 5.0


class OrderedTicks(list[Callable[[], None]]):
    """``Hub.on_tick`` with a fixed order, to put the pool's tick before or after ours."""

    def add(self, callback: Callable[[], None]) -> None:
        if callback not in self:
            self.append(callback)

    def discard(self, callback: Callable[[], None]) -> None:
        if callback in self:
            self.remove(callback)


class RecordingPoller:
    """The hub's poller, counting the polls that ended with no event (only a timeout ended
    them)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.cap = WAIT_CAP
        self.empty = 0
        self.polls = 0

    def poll(self, timeout: float | None) -> Any:
        events = self._inner.poll(self.cap if timeout is None else min(timeout, self.cap))
        self.polls += 1
        if not events:
            self.empty += 1
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class PoolLike:
    """Takes messages as Celery's prefork pool takes jobs: it holds them, registers a writer on
    its tick, and starts (and acknowledges, as Celery does by default) them when the loop finds
    the writer ready."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.outbound: list[kombu.Message] = []
        self.started: list[Any] = []
        self._read, self._write = os.pipe()

    def on_message(self, body: Any, message: kombu.Message) -> None:
        self.outbound.append(message)

    def on_tick(self) -> None:
        if self.outbound:
            self.hub.add_writer(self._write, self.on_writable)

    def on_writable(self) -> None:
        self.hub.remove_writer(self._write)
        jobs, self.outbound = self.outbound, []
        for message in jobs:
            self.started.append(message.payload)
            message.ack()

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


@pytest.fixture
def url(db_url: str) -> str:
    return broker_url(db_url)


@pytest.fixture
def hub() -> Iterator[Hub]:
    loop = Hub()
    loop.on_tick = OrderedTicks()  # type: ignore[assignment]
    loop.poller = RecordingPoller(loop.poller)
    try:
        yield loop
    finally:
        loop.close()


def run_until_idle(loop: Iterator[None], poller: RecordingPoller) -> None:
    """Turn the loop until a short poll finds nothing to do."""
    poller.cap, poller.empty = 0.05, 0
    while not poller.empty:
        next(loop)
    poller.cap, poller.empty = WAIT_CAP, 0


def test_the_transport_registers_its_sockets_and_timers_with_the_loop(url: str, hub: Hub) -> None:
    with kombu.Connection(url) as conn:
        conn.ensure_connection()
        transport = conn.transport
        transport.register_with_event_loop(conn.connection, hub)
        listener_fd = transport.listener().fileno()
        assert hub.readers[listener_fd][0] == transport.on_readable
        assert len(hub.readers) == 2  # the listener and the self-pipe other threads wake it by
        assert transport.on_tick in hub.on_tick
        assert len(hub.timer.queue) == 3  # polling, visibility extension, queue sweep
        transport.unregister_from_event_loop(conn.connection, hub)
        assert not hub.readers
        assert transport.on_tick not in hub.on_tick
        assert all(scheduled.entry.canceled for scheduled in hub.timer.queue)


@pytest.mark.parametrize("pool_ticks", ["before ours", "after ours"])
def test_messages_reach_a_pool_without_waiting_for_a_timer(
    url: str, hub: Hub, pool_ticks: str
) -> None:
    poller: RecordingPoller = hub.poller
    pool = PoolLike(hub)
    # Timers far away: only the NOTIFY, the pool's writer and the transport's self-pipe may end
    # a poll.
    options = {"polling_interval": 3600, "sweep_interval": 3600}
    queue = kombu.Queue(QUEUE, routing_key=QUEUE)
    try:
        with (
            kombu.Connection(url, transport_options=options) as consumer_conn,
            kombu.Connection(url) as producer_conn,
        ):
            consumer = kombu.Consumer(
                consumer_conn, [queue], callbacks=[pool.on_message], accept=["json"]
            )
            consumer.qos(prefetch_count=1)  # the second message waits for the first one's ack
            if pool_ticks == "before ours":
                hub.on_tick.add(pool.on_tick)
            consumer_conn.transport.register_with_event_loop(consumer_conn.connection, hub)
            if pool_ticks == "after ours":
                hub.on_tick.add(pool.on_tick)
            consumer.consume()
            loop = hub.create_loop()
            run_until_idle(loop, poller)

            producer = producer_conn.Producer(serializer="json")
            for number in (1, 2):
                producer.publish({"n": number}, routing_key=QUEUE, declare=[queue])
            while len(pool.started) < 2 and not poller.empty:
                next(loop)

            # Woken by the NOTIFY, and then by the ack that made room: never by a timeout.
            assert poller.empty == 0
            assert pool.started == [{"n": 1}, {"n": 2}]
            run_until_idle(loop, poller)
            with consumer_conn.channel() as channel:
                assert channel.queue_declare(QUEUE, passive=True).message_count == 0
            consumer.cancel()
            consumer_conn.transport.unregister_from_event_loop(consumer_conn.connection, hub)
    finally:
        pool.close()


def pending_rechecks(hub: Hub) -> list[Any]:
    return [
        s
        for s in hub.timer.queue
        if not s.entry.canceled and s.entry.fun.__name__ == "_on_recheck_timer"
    ]


def test_a_message_whose_wake_up_was_skipped_arrives_by_the_recheck(
    url: str, hub: Hub, conn: psycopg.Connection[Any]
) -> None:
    poller: RecordingPoller = hub.poller
    pool = PoolLike(hub)
    options = {"polling_interval": 3600, "sweep_interval": 3600}
    queue = kombu.Queue(QUEUE, routing_key=QUEUE)
    try:
        with (
            kombu.Connection(url, transport_options=options) as consumer_conn,
            kombu.Connection(url) as producer_conn,
        ):
            consumer = kombu.Consumer(
                consumer_conn, [queue], callbacks=[pool.on_message], accept=["json"]
            )
            consumer_conn.transport.register_with_event_loop(consumer_conn.connection, hub)
            hub.on_tick.add(pool.on_tick)
            consumer.consume()
            loop = hub.create_loop()
            run_until_idle(loop, poller)
            producer = producer_conn.Producer(serializer="json")
            producer.publish({"n": 1}, routing_key=QUEUE, declare=[queue])
            while not pool.started:
                next(loop)
            # The read that took message 1 left one recheck behind it.
            assert len(pending_rechecks(hub)) == 1
            # Message 2 comes without a NOTIFY, as when its insert raced with that read.
            conn.execute(f"ALTER TABLE pgmq.q_{QUEUE} DISABLE TRIGGER pgflow_kombu_wake")
            producer.publish({"n": 2}, routing_key=QUEUE)
            while len(pool.started) < 2 and poller.empty < 3:
                next(loop)
            assert pool.started == [{"n": 1}, {"n": 2}]
            consumer.cancel()
            consumer_conn.transport.unregister_from_event_loop(consumer_conn.connection, hub)
    finally:
        pool.close()


def test_reads_in_a_row_leave_one_recheck_due_after_the_last(url: str, hub: Hub) -> None:
    with kombu.Connection(url) as conn:
        conn.ensure_connection()
        channel = conn.default_channel
        transport = conn.transport
        transport.register_with_event_loop(conn.connection, hub)
        for _ in range(50):
            transport.recheck_later(channel, QUEUE)
        last = time.monotonic()
        (armed,) = pending_rechecks(hub)
        assert list(transport._rechecks) == [(channel, QUEUE)]
        assert transport._rechecks[(channel, QUEUE)] >= last - 0.001 + RECHECK_DELAY
        # A later read moved the recheck on: the timer, when it fires, sets itself again for it.
        later = time.monotonic() + 60
        transport._rechecks[(channel, QUEUE)] = later
        time.sleep(max(0.0, armed.eta - time.monotonic()) + 0.01)
        hub.fire_timers(propagate=())
        (rearmed,) = pending_rechecks(hub)
        assert rearmed.eta >= later - 0.01
        assert list(transport._rechecks) == [(channel, QUEUE)]
        transport.unregister_from_event_loop(conn.connection, hub)
        assert not pending_rechecks(hub)


def test_a_mark_on_a_queue_no_longer_consumed_does_not_keep_the_loop_awake(
    url: str, hub: Hub
) -> None:
    poller: RecordingPoller = hub.poller
    queue = kombu.Queue(QUEUE, routing_key=QUEUE)
    with kombu.Connection(url) as conn:
        consumer = kombu.Consumer(conn, [queue], callbacks=[lambda *_: None], accept=["json"])
        conn.transport.register_with_event_loop(conn.connection, hub)
        consumer.consume()
        loop = hub.create_loop()
        run_until_idle(loop, poller)
        channel: Any = consumer.channel
        channel._dirty.add("not_consumed_here")
        poller.cap = 0.05
        for _ in range(20):
            next(loop)
            if poller.empty:
                break
        assert poller.empty  # the loop went idle again: one read, then no more wake-ups
        assert not channel._dirty
        consumer.cancel()
        conn.transport.unregister_from_event_loop(conn.connection, hub)
