"""The default message source (worker/claiming.py) against a real database: woken by the flow
queue's insert notification, by the fallback poll for what no insert announces, by wake();
a lost listening connection is replaced without missing what was sent meanwhile; a claim whose
result was lost is handed back by reconciliation."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import Connection, sql

from pgflow_kombu.client import Client
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.queries import query
from pgflow_kombu.worker.claiming import ClaimingSource
from pgflow_kombu.worker.claims import Claims
from pgflow_kombu.worker.status import WorkerStats
from tests.integration.test_read_claim import messages, tasks_of
from tests.integration.test_worker_sql import setup_flow
from tests.support.sql import test_query

WORKER = str(uuid.uuid4())


@pytest.fixture
def claims(db_url: str) -> Iterator[Claims]:
    with connect(db_url) as conn:
        setup_flow(conn, "src")
        conn.execute(
            query("worker.register"),
            {"worker_ids": [WORKER], "queue_names": ["src"], "function_name": "tests"},
        )
    c = Claims(db_url, {"src": WORKER}, WorkerStats())
    yield c
    c.close()


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    c = Client(db_url)
    yield c
    c.close()


def opened(db_url: str, poll_interval: float) -> ClaimingSource:
    source = ClaimingSource(db_url, read_visibility=30, poll_interval=poll_interval)
    source.open(["src"], prefetch=4)
    return source


def later(seconds: float, action: object) -> threading.Timer:
    timer = threading.Timer(seconds, action)  # type: ignore[arg-type]
    timer.start()
    return timer


def test_an_insert_notification_wakes_a_waiting_claim(
    db_url: str, claims: Claims, client: Client
) -> None:
    source = opened(db_url, poll_interval=60)  # no poll within the test: only the notification
    try:
        assert source.claim(claims, 4, timeout=0.2) == []  # empty: it waited, then gave up
        began = time.monotonic()
        later(0.3, lambda: client.start_flow("src", {"n": 1}))
        tasks = source.claim(claims, 4, timeout=20)
        assert [t.step_slug for t in tasks] == ["a"] and tasks[0].worker_id == WORKER
        assert time.monotonic() - began < 10
    finally:
        source.close()


def test_the_fallback_poll_finds_what_no_insert_announced(
    db_url: str, claims: Claims, client: Client
) -> None:
    source = opened(db_url, poll_interval=0.2)
    try:
        client.start_flow("src", {"n": 1}, delay_seconds=1)  # visible in 1 s, announced now
        assert source.claim(claims, 4, timeout=0.1) == []
        tasks = source.claim(claims, 4, timeout=15)
        assert len(tasks) == 1
    finally:
        source.close()


def test_wake_and_stop_end_a_waiting_claim(db_url: str, claims: Claims) -> None:
    source = opened(db_url, poll_interval=60)
    try:
        source.claim(claims, 4, timeout=0.1)
        began = time.monotonic()
        later(0.2, source.wake)
        assert source.claim(claims, 4, timeout=20) == []
        assert time.monotonic() - began < 10
        began = time.monotonic()
        later(0.2, source.stop_consuming)
        assert source.claim(claims, 4, timeout=20) == []
        assert time.monotonic() - began < 10
        assert source.claim(claims, 4, timeout=20) == []  # stopped: returns at once
    finally:
        source.close()


def test_a_lost_listening_connection_is_replaced_and_its_notifications_are_not_missed(
    db_url: str, claims: Claims, client: Client
) -> None:
    source = opened(db_url, poll_interval=60)  # no poll within the test
    try:
        source.claim(claims, 4, timeout=0.1)
        with connect(db_url) as admin:
            (killed,) = admin.execute(test_query("claiming_kill_listener")).fetchone() or (0,)
            assert killed
            # Sent while the source has no listening connection: nobody hears it.
            client.start_flow("src", {"n": 1})
            tasks = source.claim(claims, 4, timeout=20)  # read again once it listens again
            assert len(tasks) == 1
            row = admin.execute(test_query("claiming_listeners")).fetchone()
            assert row is not None and row[0] == 1
        later(0.3, lambda: client.start_flow("src", {"n": 2}))
        assert len(source.claim(claims, 4, timeout=20)) == 1  # the new one is woken
    finally:
        source.close()


def test_a_claim_whose_result_was_lost_is_handed_back_by_reconciliation(
    db_url: str, claims: Claims, client: Client
) -> None:
    for n in range(3):
        client.start_flow("src", {"n": n})
    tasks = claims.read_and_claim(["src"], 2, 30)
    assert len(tasks) == 2
    for task in tasks:  # the result never reached the worker
        claims.forget(task)
    assert claims.reconcile() == 2
    with connect(db_url) as conn:
        states = sorted((t[3], t[4]) for t in tasks_of(conn, "src"))
        assert states == [("queued", 0)] * 3  # the attempts are not counted
        left = messages(conn, "src")
        assert all(visible_in <= 0.5 for _ct, visible_in in left.values())
    assert len(claims.read_and_claim(["src"], 5, 30)) == 3


def has_trigger(conn: Connection[Any], table: str) -> bool:
    row = conn.execute(test_query("claiming_has_trigger"), {"table": table}).fetchone()
    return bool(row and row[0])


def test_the_source_installs_the_wake_up_trigger_on_a_flow_queue(db_url: str) -> None:
    with connect(db_url) as conn:
        setup_flow(conn, "bare")
        conn.execute(sql.SQL(test_query("claiming_drop_trigger")).format(sql.Identifier("q_bare")))
        assert not has_trigger(conn, "q_bare")
    source = ClaimingSource(db_url)
    source.open(["bare"], prefetch=1)
    source.close()
    with connect(db_url) as conn:
        assert has_trigger(conn, "q_bare")
