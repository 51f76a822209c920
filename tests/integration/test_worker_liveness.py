"""Liveness: the settings every connection carries, and a worker whose heartbeat is too old.

The network itself is cut in test_network_faults.py; here the worker's own judgement is tested
in this process, deterministically: its last heartbeat is made to look older than stalled_after.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import kombu
import pytest

from pgflow_kombu.client import Client
from pgflow_kombu.db.connect import connect
from pgflow_kombu.flows import Flow
from pgflow_kombu.worker import Worker
from pgflow_kombu.worker.link import Link
from tests.celery_app.urls import broker_url

nap = Flow("nap", base_delay=0)
STARTS: list[int] = []
STARTS_LOCK = threading.Lock()


@nap.step
def sleep(run: int) -> int:
    with STARTS_LOCK:
        STARTS.append(run)
    time.sleep(2.0)
    return run


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    c = Client(db_url, poll_interval=0.2)
    yield c
    c.close()


def show(conn: Any, name: str) -> str:
    return str(conn.execute(f"SHOW {name}").fetchone()[0])


def test_every_connection_carries_the_liveness_settings(
    db_url: str, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGFLOW_KEEPALIVES_IDLE", "7")
    monkeypatch.setenv("PGFLOW_STATEMENT_TIMEOUT", "45")
    with connect(db_url) as conn:
        assert conn.info.get_parameters()["keepalives_idle"] == "7"
        assert show(conn, "client_connection_check_interval") == "5s"
        assert show(conn, "statement_timeout") == "0"  # migrations and the like: unbounded
        if not conn.info.host.startswith("/"):  # the server ignores them on Unix sockets
            assert show(conn, "tcp_keepalives_idle") == "7"
            assert show(conn, "tcp_user_timeout") == "10000"
    link = Link(db_url, statement_timeout=2.5)
    try:
        assert link.fetch("SHOW statement_timeout") == [("2500ms",)]
    finally:
        link.close()
    other = Client(db_url)
    try:
        with other.connection() as conn:
            assert show(conn, "statement_timeout") == "45s"
            assert show(conn, "client_connection_check_interval") == "5s"
    finally:
        other.close()
    with kombu.Connection(broker_url(db_url)) as broker:
        channel: Any = broker.default_channel
        with channel.db() as conn:
            assert show(conn, "statement_timeout") == "45s"
            assert conn.info.get_parameters()["keepalives_idle"] == "7"


def test_the_url_wins_over_the_settings(db_url: str) -> None:
    separator = "&" if "?" in db_url else "?"
    with connect(f"{db_url}{separator}keepalives_idle=11&tcp_user_timeout=1500") as conn:
        assert conn.info.get_parameters()["keepalives_idle"] == "11"
        if not conn.info.host.startswith("/"):
            assert show(conn, "tcp_keepalives_idle") == "11"
            assert show(conn, "tcp_user_timeout") == "1500"


def test_claimed_tasks_never_start_once_the_heartbeat_is_too_old(
    db_url: str, client: Client
) -> None:
    STARTS.clear()
    worker = Worker(
        {"nap": nap}, db_url, concurrency=1, prefetch=4, heartbeat_interval=0.5, stalled_after=3.0
    )
    worker.start()
    try:
        runs = [client.start_flow("nap", n) for n in range(4)]
        deadline = time.monotonic() + 10
        while (worker.held < 4 or not STARTS) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.held == 4 and len(STARTS) == 1  # one running, three waiting for the slot

        # As if no heartbeat had gone through for stalled_after: recovery may have taken them.
        worker.membership.alive_until = lambda: float("-inf")  # type: ignore[method-assign]
        deadline = time.monotonic() + 10
        while worker.stats.not_started < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # nothing is claimed meanwhile
        assert worker.stats.not_started == 3
        assert len(STARTS) == 1
        waiting = [client.get_run_with_states(r) for r in runs]
        tasks = [s.step_states[0].tasks[0] for s in waiting if s.status == "started"]
        # Handed back as if never claimed (they were still this worker's).
        assert [(t.status, t.attempts_count) for t in tasks] == [("queued", 0)] * 3
        assert worker.stats.released == 3

        del worker.membership.alive_until  # heartbeats count again: it claims and runs them
        for run_id in runs:
            assert client.wait(run_id, timeout=30).status == "completed"
        assert sorted(STARTS) == [0, 1, 2, 3]
    finally:
        worker.stop(10)
