"""pgflow_kombu.read_and_claim: reading a flow queue and claiming its tasks in one statement.

The effects must be those of a read followed by pgflow_kombu.claim_tasks: tasks started with the
attempt counted, messages read (read_ct) and hidden, flow control applied, never more tasks than
asked for. Bad arguments fail with an error that names them and change nothing. Concurrent
claimers never claim one task twice and lose no message."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgflow_kombu import PgFlow
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.queries import query
from pgflow_kombu.flows import Flow
from tests.integration.test_worker_sql import WORKER, setup_flow, start
from tests.support.sql import test_query

Conn = psycopg.Connection[Any]


@pytest.fixture
def conn(any_schema_url: str) -> Iterator[Conn]:
    with connect(any_schema_url) as connection:
        yield connection


def read_and_claim(
    conn: Conn,
    flows: list[str],
    qty: int,
    *,
    workers: list[str] | None = None,
    read_visibility: int = 30,
) -> list[tuple[Any, ...]]:
    params = {
        "flow_slugs": flows,
        "worker_ids": workers or [WORKER] * len(flows),
        "qty": qty,
        "read_visibility": read_visibility,
    }
    return conn.execute(query("worker.read_and_claim"), params).fetchall()


def messages(conn: Conn, slug: str) -> dict[int, tuple[int, float]]:
    """msg_id -> (read_ct, seconds until visible)."""
    statement = sql.SQL(test_query("read_claim_messages")).format(sql.Identifier(f"q_{slug}"))
    return {m: (ct, left) for m, ct, left in conn.execute(statement)}


def tasks_of(conn: Conn, slug: str) -> list[tuple[Any, ...]]:
    return conn.execute(test_query("read_claim_tasks_of_flow"), {"flow_slug": slug}).fetchall()


def test_reads_and_claims_with_the_effects_of_a_read_and_a_claim(conn: Conn) -> None:
    setup_flow(conn, steps=(("a", [], 5, "single"), ("b", [], None, "single")), timeout=40)
    run_id = start(conn, input={"x": 1})
    rows = read_and_claim(conn, ["wf"], 10, read_visibility=20)
    assert [(r[0], str(r[1]), r[2], r[3], r[5], r[6], r[7]) for r in rows] == [
        ("wf", run_id, "a", 0, {"run": {"x": 1}}, 1, 5),
        ("wf", run_id, "b", 0, {"run": {"x": 1}}, 1, 40),
    ]
    claimed = {r[2]: r[4] for r in rows}
    assert [(t[1], t[3], t[4], t[5], t[6]) for t in tasks_of(conn, "wf")] == [
        ("a", "started", 1, WORKER, True),
        ("b", "started", 1, WORKER, True),
    ]
    left = messages(conn, "wf")
    assert left[claimed["a"]][0] == 1 and 18 <= left[claimed["a"]][1] <= 20.5  # read: 20 s
    assert left[claimed["b"]][0] == 1 and 41 <= left[claimed["b"]][1] <= 42.5  # 40 + 2 > 20
    assert read_and_claim(conn, ["wf"], 10) == []  # nothing visible is left


def test_never_claims_more_than_asked_and_leaves_the_rest_unread(conn: Conn) -> None:
    setup_flow(conn)
    runs = [start(conn, input=i) for i in range(5)]
    rows = read_and_claim(conn, ["wf"], 3)
    assert [str(r[1]) for r in rows] == runs[:3]  # oldest first
    left = messages(conn, "wf")
    assert sorted(ct for ct, _ in left.values()) == [0, 0, 1, 1, 1]
    assert [str(r[1]) for r in read_and_claim(conn, ["wf"], 3)] == runs[3:]


def test_what_is_left_of_qty_goes_to_the_next_flow_with_its_worker(conn: Conn) -> None:
    other_worker = str(uuid.uuid4())
    setup_flow(conn, "f1")
    setup_flow(conn, "f2")
    conn.execute(
        query("worker.register"),
        {"worker_ids": [other_worker], "queue_names": ["f2"], "function_name": "tests"},
    )
    for slug in ("f1", "f2"):
        start(conn, slug)
        start(conn, slug)
    rows = read_and_claim(conn, ["f2", "f1"], 3, workers=[other_worker, WORKER])
    assert [r[0] for r in rows] == ["f2", "f2", "f1"]
    assert {t[5] for t in tasks_of(conn, "f2")} == {other_worker}
    assert [t[3] for t in tasks_of(conn, "f1")] == ["started", "queued"]


def test_a_message_without_a_queued_task_is_read_and_left_alone(conn: Conn) -> None:
    setup_flow(conn)
    start(conn)
    assert len(read_and_claim(conn, ["wf"], 5)) == 1
    table = sql.Identifier("q_wf")
    conn.execute(sql.SQL(test_query("sqlcore_make_visible")).format(table))
    assert read_and_claim(conn, ["wf"], 5, read_visibility=7) == []  # its task is started
    ((read_ct, left),) = messages(conn, "wf").values()
    assert read_ct == 2 and 5 <= left <= 7.5  # read again, hidden as a read hides it
    assert [(t[3], t[4]) for t in tasks_of(conn, "wf")] == [("started", 1)]


def test_flow_control_defers_what_is_over_a_limit_without_counting_an_attempt(
    db_url: str,
) -> None:
    flow = Flow("one_at_a_time", max_concurrency=1)

    @flow.step
    def work(run: int) -> int:
        return run

    app = PgFlow(db_url)
    app.register(flow)
    try:
        for i in range(3):
            app.start_flow("one_at_a_time", i)
        with connect(db_url) as conn:
            conn.execute(
                query("worker.register"),
                {"worker_ids": [WORKER], "queue_names": ["one_at_a_time"], "function_name": "t"},
            )
            rows = read_and_claim(conn, ["one_at_a_time"], 3)
            assert len(rows) == 1
            states = tasks_of(conn, "one_at_a_time")
            assert sorted((t[3], t[4]) for t in states) == [
                ("queued", 0),
                ("queued", 0),
                ("started", 1),
            ]
            deferred = [
                left
                for m, (_ct, left) in messages(conn, "one_at_a_time").items()
                if m != rows[0][4]
            ]
            assert len(deferred) == 2 and all(0 < left <= 1.5 for left in deferred)
            assert read_and_claim(conn, ["one_at_a_time"], 3) == []  # the slot is taken
    finally:
        flow.bind(None)
        app.close()


# -- bad input -----------------------------------------------------------------------------------

BAD = [
    ({"qty": 0}, "qty must be a positive number of tasks, got 0"),
    ({"qty": None}, "qty must be a positive number of tasks, got NULL"),
    ({"read_visibility": -1}, "read_visibility must be >= 0 seconds, got -1"),
    ({"read_visibility": None}, "read_visibility must be >= 0 seconds, got NULL"),
    ({"worker_ids": []}, "must be arrays of one length (one worker id per flow), got 1 and 0"),
    ({"flow_slugs": None}, "must be arrays of one length (one worker id per flow), got NULL and 1"),
    ({"flow_slugs": [None]}, "flow_slugs and worker_ids must not contain NULL"),
    ({"worker_ids": [None]}, "flow_slugs and worker_ids must not contain NULL"),
    ({"flow_slugs": ["wf", "WF"], "worker_ids": [WORKER, WORKER]}, "lists a flow twice"),
    ({"flow_slugs": ["nope"]}, 'flow "nope" has no queue'),
    ({"flow_slugs": ["wf", "nope"], "worker_ids": [WORKER, WORKER]}, 'flow "nope" has no queue'),
    ({"worker_ids": ["00000000-0000-4000-8000-00000000dead"]}, "unknown worker id"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[m for _c, m in BAD])
def test_bad_arguments_fail_naming_them_and_change_nothing(
    conn: Conn, change: dict[str, Any], message: str
) -> None:
    setup_flow(conn)
    start(conn)
    before = (messages(conn, "wf"), tasks_of(conn, "wf"))
    params = {"flow_slugs": ["wf"], "worker_ids": [WORKER], "qty": 5, "read_visibility": 30}
    params.update(change)
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(test_query("read_claim_call"), params)
    assert message in str(caught.value)
    after = (messages(conn, "wf"), tasks_of(conn, "wf"))
    assert [ct for ct, _ in after[0].values()] == [0] and after[1] == before[1]
    assert len(read_and_claim(conn, ["wf"], 5)) == 1  # still there to claim


# -- concurrency ---------------------------------------------------------------------------------


def test_concurrent_claimers_claim_each_task_once_and_lose_no_message(db_url: str) -> None:
    flows = ["c1", "c2"]
    runs = 150
    with connect(db_url) as conn:
        for slug in flows:
            setup_flow(conn, slug, steps=(("a", [], None, "single"), ("b", [], None, "single")))
            for i in range(runs):
                start(conn, slug, input=i)
    claimed: list[tuple[str, str, str, int]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def claimer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with connect(db_url) as conn:
                barrier.wait()
                empty = 0
                while empty < 3:
                    order = flows if rng.random() < 0.5 else flows[::-1]
                    rows = read_and_claim(conn, order, rng.randint(1, 7))
                    empty = 0 if rows else empty + 1
                    with lock:
                        claimed.extend((r[0], str(r[1]), r[2], r[3]) for r in rows)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    counts = Counter(claimed)
    assert max(counts.values()) == 1  # no task claimed twice
    assert len(counts) == 2 * runs * 2  # every task claimed: no message lost
    with connect(db_url) as conn:
        for slug in flows:
            states = tasks_of(conn, slug)
            assert {(t[3], t[4]) for t in states} == {("started", 1)}
            assert {ct for ct, _ in messages(conn, slug).values()} == {1}  # each read once
