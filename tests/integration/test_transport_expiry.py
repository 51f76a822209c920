"""Queue lifetimes of the pgflow:// transport: auto-delete counted over every consumer of the
database, x-expires, and consumers whose process died without a word."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from functools import partial
from pathlib import Path
from typing import Any

import kombu
import psycopg
import pytest
from celery import Celery

import pgflow_kombu  # noqa: F401 - registers the pgflow:// alias
from pgflow_kombu.transport.names import pgmq_name
from tests.celery_app.urls import broker_url
from tests.celery_app.worker import Worker

Conn = psycopg.Connection[Any]
ROOT = Path(__file__).resolve().parents[2]
SWEEP = {"sweep_interval": 0.1}


@pytest.fixture
def url(db_url: str) -> str:
    return broker_url(db_url)


def connection(url: str, **options: Any) -> kombu.Connection:
    return kombu.Connection(url, transport_options=options)


def table(queue: str) -> str:
    return "q_" + pgmq_name(queue)


def exists(conn: Conn, queue: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"pgmq.{table(queue)}",)).fetchone()
    return bool(row and row[0])


def recorded(conn: Conn, queue: str) -> bool:
    row = conn.execute("SELECT count(*) FROM pgflow_kombu.queues WHERE name = %s", (queue,))
    return row.fetchone() == (1,)


def bindings(conn: Conn, queue: str) -> int:
    row = conn.execute("SELECT count(*) FROM pgflow_kombu.bindings WHERE queue = %s", (queue,))
    result = row.fetchone()
    return int(result[0]) if result else 0


def consumers(conn: Conn, queue: str) -> int:
    row = conn.execute("SELECT count(*) FROM pgflow_kombu.consumers WHERE queue = %s", (queue,))
    result = row.fetchone()
    return int(result[0]) if result else 0


def gone(conn: Conn, queue: str) -> bool:
    return not exists(conn, queue) and not recorded(conn, queue) and bindings(conn, queue) == 0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def settle(seconds: float) -> None:
    """Let time pass (for expiries that must *not* happen); never asserted on."""
    time.sleep(seconds)


@pytest.fixture
def sweeper(url: str) -> Iterator[kombu.Connection]:
    """A live connection that drains events (and so sweeps every 0.1 s) on a thread."""
    stop = threading.Event()
    kconn = connection(url, **SWEEP)
    kconn.connect()

    def run() -> None:
        while not stop.is_set():
            with suppress(TimeoutError):
                kconn.drain_events(timeout=0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield kconn
    finally:
        stop.set()
        thread.join(timeout=10)
        kconn.release()


class Collector:
    def __init__(self) -> None:
        self.bodies: list[Any] = []

    def __call__(self, body: Any, message: kombu.Message) -> None:
        self.bodies.append(body)
        message.ack()


def drain_until(
    kconn: kombu.Connection, condition: Callable[[], bool], timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for a delivery")
        with suppress(TimeoutError):
            kconn.drain_events(timeout=0.2)


# -- auto-delete: the last consumer of every connection --------------------------------------


def test_auto_delete_queue_stays_until_its_last_consumer_cancels(conn: Conn, url: str) -> None:
    exchange = kombu.Exchange("shared_replies", type="direct")
    queue = kombu.Queue("shared.reply", exchange, routing_key="r", auto_delete=True)
    first_got, second_got = Collector(), Collector()
    with connection(url) as first, connection(url) as second, connection(url) as producer:
        first_consumer = kombu.Consumer(first, [queue], callbacks=[first_got])
        second_consumer = kombu.Consumer(second, [queue], callbacks=[second_got])
        first_consumer.consume()
        second_consumer.consume()
        assert consumers(conn, "shared.reply") == 2

        first_consumer.cancel()
        assert exists(conn, "shared.reply")
        assert recorded(conn, "shared.reply")
        assert bindings(conn, "shared.reply") == 1
        assert consumers(conn, "shared.reply") == 1

        producer.Producer().publish({"still": "here"}, exchange=exchange, routing_key="r")
        drain_until(second, lambda: bool(second_got.bodies))
        assert second_got.bodies == [{"still": "here"}]
        assert first_got.bodies == []

        second_consumer.cancel()
        assert gone(conn, "shared.reply")
        assert consumers(conn, "shared.reply") == 0


def test_auto_delete_queue_goes_when_its_last_connection_closes(conn: Conn, url: str) -> None:
    queue = kombu.Queue("closing.reply", auto_delete=True)
    with connection(url) as first:
        kombu.Consumer(first, [queue]).consume()
        with connection(url) as second:
            kombu.Consumer(second, [queue]).consume()
        assert exists(conn, "closing.reply")
    assert gone(conn, "closing.reply")


def test_auto_delete_queue_never_consumed_stays(conn: Conn, url: str, sweeper: Any) -> None:
    with connection(url) as kconn, kconn.channel() as channel:
        kombu.Queue("never.consumed", auto_delete=True)(channel).declare()
    settle(0.5)
    assert exists(conn, "never.consumed")


# -- x-expires -----------------------------------------------------------------------------


def test_expiring_queue_goes_when_unused_and_stays_while_consumed(
    conn: Conn, url: str, sweeper: Any
) -> None:
    exchange = kombu.Exchange("expiry", type="direct")
    idle = kombu.Queue("idle.queue", exchange, routing_key="idle", expires=0.3)
    busy = kombu.Queue("busy.queue", exchange, routing_key="busy", expires=0.3)
    with connection(url) as kconn:
        producer = kconn.Producer()
        producer.publish("left behind", exchange=exchange, routing_key="idle", declare=[idle])
        with kombu.Consumer(kconn, [busy], callbacks=[Collector()]):
            wait_until(lambda: gone(conn, "idle.queue"), "the unused queue expired")
            settle(1.0)  # three times its x-expires
            assert exists(conn, "busy.queue")
            assert bindings(conn, "busy.queue") == 1
        # Unused from the moment its consumer went away.
        wait_until(lambda: gone(conn, "busy.queue"), "the queue expired after its consumer left")


def test_basic_get_keeps_an_expiring_queue(conn: Conn, url: str, sweeper: Any) -> None:
    queue = kombu.Queue("polled.queue", expires=0.4)
    with connection(url) as kconn, closing(kconn.SimpleQueue(queue)) as simple:
        until = time.monotonic() + 1.6
        while time.monotonic() < until:
            with pytest.raises(simple.Empty):
                simple.get_nowait()
            time.sleep(0.05)
        assert exists(conn, "polled.queue")
        wait_until(lambda: gone(conn, "polled.queue"), "the queue expired once no longer polled")


def test_redeclaring_renews_an_expiring_queue(conn: Conn, url: str, sweeper: Any) -> None:
    queue = kombu.Queue("renewed.queue", expires=0.4)
    with connection(url) as kconn, kconn.channel() as channel:
        until = time.monotonic() + 1.6
        while time.monotonic() < until:
            queue(channel).declare()
            time.sleep(0.05)
        assert exists(conn, "renewed.queue")
        # A passive declaration renews it too, and leaves what it was declared with alone.
        channel.queue_declare("renewed.queue", passive=True)
        row = conn.execute(
            "SELECT arguments FROM pgflow_kombu.queues WHERE name = 'renewed.queue'"
        ).fetchone()
        assert row == ({"x-expires": 400},)
        wait_until(lambda: gone(conn, "renewed.queue"), "the queue expired once not redeclared")


def test_delete_if_unused_keeps_a_consumed_queue(conn: Conn, url: str) -> None:
    with connection(url) as kconn, connection(url) as other, other.channel() as channel:
        with kombu.Consumer(kconn, [kombu.Queue("in_use")]):
            channel.queue_delete("in_use", if_unused=True)
            assert exists(conn, "in_use")
        channel.queue_delete("in_use", if_unused=True)
        assert gone(conn, "in_use")


# -- consumers whose process died ----------------------------------------------------------

DOOMED = """
import sys, time
import kombu
import pgflow_kombu

exchange = kombu.Exchange("doomed", type="direct")
queues = [
    kombu.Queue("doomed.auto", exchange, routing_key="auto", auto_delete=True),
    kombu.Queue("doomed.expiring", exchange, routing_key="expiring", expires=0.3),
]
conn = kombu.Connection(sys.argv[1])
kombu.Consumer(conn, queues, callbacks=[lambda body, message: None]).consume()
print("consuming", flush=True)
time.sleep(600)  # never drains: alive, but silent
"""


@pytest.fixture
def doomed(url: str) -> Iterator[subprocess.Popen[str]]:
    """A process consuming an auto-delete queue and an expiring queue, never cancelling."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DOOMED), url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "consuming"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def test_queues_of_a_killed_consumer_go(
    conn: Conn, url: str, doomed: subprocess.Popen[str], sweeper: Any
) -> None:
    settle(1.0)  # more than x-expires: a live consumer keeps both, even one that never drains
    for queue in ("doomed.auto", "doomed.expiring"):
        assert exists(conn, queue)
        assert bindings(conn, queue) == 1
        assert consumers(conn, queue) == 1
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    for queue in ("doomed.auto", "doomed.expiring"):
        wait_until(partial(gone, conn, queue), f"{queue} went with its killed consumer")
        assert consumers(conn, queue) == 0


def test_auto_delete_queue_declared_again_survives_its_dead_consumer(
    conn: Conn, url: str, doomed: subprocess.Popen[str]
) -> None:
    """A process that reconnects declares its queues again before it consumes them: the dead
    consumer of the old connection does not take the fresh declaration away."""
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    exchange = kombu.Exchange("doomed", type="direct")
    queue = kombu.Queue("doomed.auto", exchange, routing_key="auto", auto_delete=True)
    with connection(url) as kconn:
        with kconn.channel() as channel:
            queue(channel).declare()

        def swept() -> bool:
            kconn.transport.sweep()
            return consumers(conn, "doomed.auto") == 0

        wait_until(swept, "a sweep found the dead consumer")
        assert exists(conn, "doomed.auto")
        assert bindings(conn, "doomed.auto") == 1
        with kombu.Consumer(kconn, [queue]):
            assert consumers(conn, "doomed.auto") == 1
        assert gone(conn, "doomed.auto")


@pytest.mark.celery
def test_pidbox_queue_of_a_killed_celery_worker_goes(
    conn: Conn, url: str, sweeper: Any, tmp_path: Path
) -> None:
    env = {**os.environ, "CELERY_TEST_BROKER": url, "PYTHONPATH": str(ROOT)}
    env.pop("CELERY_TEST_BACKEND", None)
    env.pop("CELERY_TEST_TRANSPORT_OPTIONS", None)
    control = Celery("control", broker=url)
    try:
        worker = Worker("doomed", env, tmp_path, control=control).start(timeout=60)
        try:
            rows = conn.execute(
                "SELECT name FROM pgflow_kombu.queues WHERE name LIKE %s",
                (f"{worker.hostname}.%pidbox",),
            ).fetchall()
            assert len(rows) == 1, worker.log()
            pidbox = rows[0][0]
            assert consumers(conn, pidbox) == 1
            # The readiness ping's reply queue went when the ping was answered.
            replies = conn.execute(
                "SELECT count(*) FROM pgflow_kombu.queues WHERE name LIKE '%%reply.celery.pidbox'"
            ).fetchone()
            assert replies == (0,)
        finally:
            worker.stop(sig=signal.SIGKILL)
        wait_until(partial(gone, conn, pidbox), "the killed worker's pidbox queue went")
    finally:
        control.close()
