"""PostgreSQL restarted under the transport: consumers reconnect, nothing confirmed is lost.

Runs on a throwaway embedded server in a temporary directory (never the shared one).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
from celery import Celery
from kombu.mixins import ConsumerMixin

import pgflow_kombu  # noqa: F401 - registers the pgflow:// alias
from pgflow_kombu.db import migrations
from pgflow_kombu.db.admin import create_database
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.urls import with_database
from tests.celery_app.servers import ThrowawayServer
from tests.celery_app.urls import broker_url
from tests.celery_app.worker import ROOT, Worker

RETRY = {"max_retries": 60, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.5}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayServer]:
    throwaway = ThrowawayServer(tmp_path_factory.mktemp("restart") / "pgdata")
    yield throwaway
    throwaway.close()


@pytest.fixture
def restart_url(server: ThrowawayServer, request: pytest.FixtureRequest) -> str:
    name = f"r_{request.node.name[-40:].lower()}".replace("[", "_").replace("]", "_")
    with connect(server.url()) as conn:
        create_database(conn, name)
    url = with_database(server.url(), name)
    migrations.upgrade(url)
    return broker_url(url)


class Collecting(ConsumerMixin):
    def __init__(self, url: str, queue: kombu.Queue) -> None:
        self.connection = kombu.Connection(url, transport_options={"polling_interval": 0.5})
        self.queue = queue
        self.bodies: list[Any] = []
        self.connected = 0

    def get_consumers(self, consumer: Any, channel: Any) -> list[kombu.Consumer]:
        return [consumer([self.queue], callbacks=[self.on_message], prefetch_count=20)]

    def on_connection_revived(self) -> None:
        self.connected += 1

    def on_message(self, body: Any, message: kombu.Message) -> None:
        self.bodies.append(body)
        message.ack()


def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def publish_all(url: str, queue: kombu.Queue, bodies: list[int]) -> None:
    with kombu.Connection(url) as conn:
        producer = conn.Producer()
        for body in bodies:
            producer.publish(
                body, routing_key=queue.name, declare=[queue], retry=True, retry_policy=RETRY
            )


def test_waiting_consumer_reconnects_after_a_restart(
    server: ThrowawayServer, restart_url: str
) -> None:
    queue = kombu.Queue("survivors")
    consumer = Collecting(restart_url, queue)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: consumer.connected >= 1, 15)
        publish_all(restart_url, queue, list(range(10)))
        assert wait_for(lambda: len(consumer.bodies) >= 10, 15)

        server.restart()  # the consumer is idle, waiting on its LISTEN connection

        publish_all(restart_url, queue, list(range(10, 20)))
        assert wait_for(lambda: set(range(20)) <= set(consumer.bodies), 30), consumer.bodies
        assert consumer.connected >= 2
    finally:
        consumer.should_stop = True
        thread.join(10)


def test_publisher_through_a_restart_loses_nothing_confirmed(
    server: ThrowawayServer, restart_url: str
) -> None:
    queue = kombu.Queue("confirmed")
    confirmed: list[int] = []
    failures: list[BaseException] = []
    transports: set[int] = set()

    def publisher() -> None:
        try:
            with kombu.Connection(restart_url) as conn:
                producer = conn.Producer()
                for body in range(400):
                    producer.publish(
                        body,
                        routing_key="confirmed",
                        declare=[queue],
                        retry=True,
                        retry_policy=RETRY,
                    )
                    confirmed.append(body)
                    transports.add(id(conn.connection))
                    time.sleep(0.002)
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    assert wait_for(lambda: len(confirmed) >= 50, 15)
    server.restart()
    thread.join(60)
    assert not failures, failures
    assert confirmed == list(range(400))
    assert len(transports) >= 2  # it did lose its connection and reconnect

    consumer = Collecting(restart_url, queue)
    runner = threading.Thread(target=consumer.run, daemon=True)
    runner.start()
    try:
        assert wait_for(lambda: set(confirmed) <= set(consumer.bodies), 30)
    finally:
        consumer.should_stop = True
        runner.join(10)


@pytest.mark.celery
def test_celery_worker_comes_back_after_a_restart(
    server: ThrowawayServer, restart_url: str, tmp_path: Path
) -> None:
    database = "postgresql+psycopg://" + restart_url.split("://", 1)[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CELERY_TEST_BROKER": restart_url,
        "CELERY_TEST_BACKEND": "db+" + database,
        "CELERY_TEST_LOG": str(tmp_path / "events.jsonl"),
        "CELERY_TEST_TRANSPORT_OPTIONS": json.dumps({"polling_interval": 0.5}),
    }
    client = Celery("restart-client", broker=restart_url, backend="db+" + database)
    client.conf.update(
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy=RETRY,
        database_table_names={"task": "celery_taskmeta", "group": "celery_groupmeta"},
    )
    try:
        with Worker("survivor", env, tmp_path, control=client).start() as worker:
            assert client.send_task("tests.celery_app.app.add", (1, 2)).get(timeout=30) == 3
            server.restart()
            result = client.send_task("tests.celery_app.app.add", (2, 3))
            assert result.get(timeout=60) == 5, worker.log()
    finally:
        client.close()
