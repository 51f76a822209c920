"""The worker's SQL functions: batch claims, grouped reports with attempt guards, releases.

Every test runs on our schema and on an upstream-installed pgflow schema with our objects on top
(where report_tasks falls back to pgflow's own complete_task)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.queries import query
from tests.support.sql import test_query

Conn = psycopg.Connection[Any]
WORKER = str(uuid.uuid4())
OTHER = str(uuid.uuid4())


@pytest.fixture
def conn(any_schema_url: str) -> Iterator[Conn]:
    with connect(any_schema_url) as connection:
        yield connection


def setup_flow(
    conn: Conn,
    slug: str = "wf",
    steps: tuple[tuple[str, list[str], int | None, str], ...] = (("a", [], None, "single"),),
    *,
    max_attempts: int = 3,
    base_delay: int = 0,
    timeout: int = 10,
) -> None:
    conn.execute(
        test_query("worker_create_flow"),
        {"slug": slug, "max_attempts": max_attempts, "base_delay": base_delay, "timeout": timeout},
    )
    for step, deps, step_timeout, step_type in steps:
        conn.execute(
            test_query("worker_add_step"),
            {
                "slug": slug,
                "step": step,
                "deps": deps,
                "timeout": step_timeout,
                "step_type": step_type,
            },
        )
    for worker_id in (WORKER, OTHER):
        conn.execute(
            query("worker.register"),
            {"worker_ids": [worker_id], "queue_names": [slug], "function_name": "tests"},
        )


def start(conn: Conn, slug: str = "wf", input: Any = None) -> str:
    row = conn.execute(test_query("worker_start_flow"), {"slug": slug, "input": Jsonb(input)})
    return str(row.fetchone()[0])  # type: ignore[index]


def read(conn: Conn, slug: str = "wf", vt: int = 30) -> list[int]:
    rows = conn.execute(query("worker.read_messages"), {"queue_name": slug, "vt": vt, "qty": 100})
    return [r[0] for r in rows]


def claim(
    conn: Conn, msg_ids: list[int], slug: str = "wf", worker: str = WORKER, read_visibility: int = 0
) -> list[Any]:
    params = {
        "flow_slug": slug,
        "msg_ids": msg_ids,
        "worker_id": worker,
        "read_visibility": read_visibility,
    }
    return conn.execute(query("worker.claim_tasks"), params).fetchall()


def report(conn: Conn, reports: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    rows = conn.execute(query("worker.report_tasks"), {"reports": Jsonb(reports)}).fetchall()
    return [(outcome, detail) for _ord, outcome, detail, *_after in sorted(rows)]


def ident(run_id: str, step: str = "a", index: int = 0, attempt: int = 1, worker: str = WORKER):  # type: ignore[no-untyped-def]
    return {
        "run_id": run_id,
        "step_slug": step,
        "task_index": index,
        "attempt": attempt,
        "worker_id": worker,
    }


def tasks(conn: Conn, run_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(test_query("worker_tasks"), {"run_id": run_id}).fetchall()


def delays(conn: Conn, slug: str = "wf") -> dict[int, float]:
    stmt = sql.SQL(test_query("worker_message_delays")).format(sql.Identifier(f"q_{slug}"))
    return {msg_id: delay for msg_id, delay in conn.execute(stmt)}


def test_claim_returns_inputs_and_attempts_and_sets_visibility_to_timeout_plus_2(
    conn: Conn,
) -> None:
    setup_flow(conn, steps=(("a", [], 5, "single"), ("b", [], None, "single")), timeout=20)
    run_id = start(conn, input={"x": 1})
    msg_ids = read(conn, vt=1)
    rows = claim(conn, msg_ids)
    assert [(r[1], r[4], r[5], r[6]) for r in rows] == [
        ("a", {"run": {"x": 1}}, 1, 5),
        ("b", {"run": {"x": 1}}, 1, 20),
    ]
    assert str(rows[0][0]) == run_id
    left = delays(conn)
    assert 6 <= left[rows[0][3]] <= 7.5  # step timeout 5 + 2
    assert 21 <= left[rows[1][3]] <= 22.5  # flow timeout 20 + 2
    assert [t[2:4] for t in tasks(conn, run_id)] == [("started", 1), ("started", 1)]


def test_claim_extends_only_what_the_read_did_not_hide_long_enough(conn: Conn) -> None:
    setup_flow(conn, steps=(("a", [], 5, "single"), ("b", [], None, "single")), timeout=20)
    start(conn)
    rows = claim(conn, read(conn, vt=10), read_visibility=10)
    left = delays(conn)
    by_step = {r[1]: r[3] for r in rows}
    assert 8 <= left[by_step["a"]] <= 10.5  # 5 + 2 <= 10: left as the read hid it
    assert 21 <= left[by_step["b"]] <= 22.5  # 20 + 2 > 10: extended


def test_a_message_whose_task_is_not_queued_is_left_alone(conn: Conn) -> None:
    setup_flow(conn)
    start(conn)
    msg_ids = read(conn, vt=30)
    assert len(claim(conn, msg_ids, worker=OTHER)) == 1
    before = delays(conn)
    assert claim(conn, msg_ids) == []  # another worker holds it
    after = delays(conn)
    assert after.keys() == before.keys()
    assert all(abs(after[m] - before[m]) < 1 for m in after)


def test_reports_complete_and_cascade_in_one_call(conn: Conn) -> None:
    setup_flow(conn, steps=(("a", [], None, "single"), ("b", ["a"], None, "single")))
    run_ids = [start(conn, input=i) for i in range(3)]
    claim(conn, read(conn))
    assert (
        report(conn, [{**ident(r), "output": i * 10} for i, r in enumerate(run_ids)])
        == [("completed", None)] * 3
    )
    # Each run's second step is now queued with its dependency's output as input.
    rows = claim(conn, read(conn))
    assert sorted((str(r[0]), r[1], r[4]["a"]) for r in rows) == sorted(
        (r, "b", i * 10) for i, r in enumerate(run_ids)
    )
    report(conn, [{**ident(str(r[0]), "b"), "output": "done"} for r in rows])
    for run_id in run_ids:
        assert conn.execute(test_query("worker_run_status"), {"run_id": run_id}).fetchone() == (
            "completed",
        )


def message_of(conn: Conn, run_id: str) -> int:
    rows = conn.execute(test_query("worker_message_ids"), {"run_id": run_id}).fetchall()
    return int(rows[0][2])


def queue_ids(conn: Conn, table: str) -> list[int]:
    stmt = sql.SQL(test_query("worker_queue_ids")).format(sql.Identifier(table))
    return [row[0] for row in conn.execute(stmt)]


def test_reports_archive_the_messages_of_the_tasks_they_complete(conn: Conn) -> None:
    setup_flow(conn, "wf")
    setup_flow(conn, "wg")
    done_f, done_g, stale = start(conn, "wf"), start(conn, "wg"), start(conn, "wf")
    claim(conn, read(conn, "wf"), "wf")
    claim(conn, read(conn, "wg"), "wg")
    outcomes = report(
        conn,
        [
            {**ident(done_f), "output": 1},
            {**ident(stale, attempt=2), "output": 2},
            {**ident(done_g), "output": 3},
        ],
    )
    assert [outcome for outcome, _detail in outcomes] == ["completed", "stale", "completed"]
    assert queue_ids(conn, "a_wf") == [message_of(conn, done_f)]
    assert queue_ids(conn, "a_wg") == [message_of(conn, done_g)]
    assert queue_ids(conn, "q_wf") == [message_of(conn, stale)]
    assert queue_ids(conn, "q_wg") == []


def test_an_attempt_is_reported_once_and_never_after_it_failed(conn: Conn) -> None:
    setup_flow(conn, max_attempts=3)
    run_id = start(conn)
    claim(conn, read(conn))
    assert report(conn, [{**ident(run_id), "error": "TimeoutError: too slow"}]) == [
        ("failed", None)
    ]
    # The late result of the failed attempt is refused, as is a repeated failure.
    outcomes = report(conn, [{**ident(run_id), "output": 1}, {**ident(run_id), "error": "again"}])
    assert [o for o, _ in outcomes] == ["stale", "stale"]
    assert tasks(conn, run_id)[0][2:6] == ("queued", 1, None, "TimeoutError: too slow")
    # The retry is attempt 2; a report naming attempt 1 or another worker does not apply.
    claim(conn, read(conn))
    outcomes = report(
        conn,
        [
            {**ident(run_id, attempt=1), "output": "old"},
            {**ident(run_id, attempt=2, worker=OTHER), "output": "theirs"},
        ],
    )
    assert [o for o, _ in outcomes] == ["stale", "stale"]
    assert report(conn, [{**ident(run_id, attempt=2), "output": "ok"}]) == [("completed", None)]
    assert report(conn, [{**ident(run_id, attempt=2), "output": "twice"}])[0][0] == "stale"
    # Completed, without the first attempt's error (which pgflow 0.8.1's complete_task keeps).
    assert tasks(conn, run_id)[0][2:6] == ("completed", 2, "ok", None)


def test_one_refused_completion_does_not_undo_the_others(conn: Conn) -> None:
    setup_flow(conn, max_attempts=1)
    conn.execute(test_query("worker_explode_on_output"))
    good, bad = start(conn, input=1), start(conn, input=2)
    claim(conn, read(conn))
    outcomes = dict(
        zip(
            ["good", "bad"],
            report(conn, [{**ident(good), "output": "fine"}, {**ident(bad), "output": "explode"}]),
            strict=True,
        )
    )
    assert outcomes["good"] == ("completed", None)
    assert outcomes["bad"][0] == "rejected" and "refusing this output" in str(outcomes["bad"][1])
    assert tasks(conn, good)[0][2] == "completed"
    status, attempts, _output, error = tasks(conn, bad)[0][2:6]
    assert (status, attempts) == ("failed", 1)
    assert error == "complete_task failed: refusing this output"


def test_a_report_that_cannot_lock_its_run_in_time_is_retried_alone(
    conn: Conn, any_schema_url: str
) -> None:
    setup_flow(conn)
    locked, free = start(conn, input=1), start(conn, input=2)
    claim(conn, read(conn))
    with connect(any_schema_url, autocommit=False) as holder:
        holder.execute(test_query("worker_lock_run"), {"run_id": locked})
        conn.execute(test_query("worker_short_lock_timeout"))
        outcomes = report(conn, [{**ident(locked), "output": 1}, {**ident(free), "output": 2}])
        holder.rollback()
    assert outcomes[0][0] == "retry"
    assert "lock timeout" in str(outcomes[0][1])
    assert outcomes[1] == ("completed", None)
    # Nothing of the refused report was applied: the attempt is still held, and reporting it
    # again once the lock is free completes it, once.
    assert tasks(conn, locked)[0][2:6] == ("started", 1, None, None)
    assert report(conn, [{**ident(locked), "output": 1}]) == [("completed", None)]
    assert report(conn, [{**ident(locked), "output": 1}])[0][0] == "stale"
    assert tasks(conn, locked)[0][2:6] == ("completed", 1, 1, None)
    assert tasks(conn, free)[0][2:6] == ("completed", 1, 2, None)


def test_release_hands_back_unstarted_claims_without_counting_the_attempt(conn: Conn) -> None:
    setup_flow(conn)
    run_id = start(conn)
    claim(conn, read(conn, vt=30))
    # Only the holder's current attempt can be released.
    released = conn.execute(
        query("worker.release_tasks"), {"tasks": Jsonb([ident(run_id, worker=OTHER)])}
    ).fetchone()
    assert released == (0,)
    released = conn.execute(
        query("worker.release_tasks"), {"tasks": Jsonb([ident(run_id)])}
    ).fetchone()
    assert released == (1,)
    assert tasks(conn, run_id)[0][2:4] == ("queued", 0)
    assert all(d <= 0.5 for d in delays(conn).values())  # visible again at once
    assert len(claim(conn, read(conn))) == 1


def test_recovery_requeues_tasks_of_silent_workers_only(conn: Conn) -> None:
    setup_flow(conn)
    dead_run, live_run = start(conn, input=1), start(conn, input=2)
    msg_ids = read(conn)
    claim(conn, msg_ids[:1], worker=OTHER)
    claim(conn, msg_ids[1:])
    time.sleep(0.6)  # both tasks were claimed longer ago than the stall limit below
    conn.execute(test_query("worker_set_heartbeat_age"), {"age": 60, "worker_ids": [OTHER]})
    conn.execute(query("worker.heartbeat"), {"worker_ids": [WORKER]})
    recovered = conn.execute(
        query("worker.recover_stalled_tasks"), {"stalled_after": 0.5}
    ).fetchone()
    assert recovered == (1,)
    assert tasks(conn, dead_run)[0][2:4] == ("queued", 1)
    assert tasks(conn, live_run)[0][2:4] == ("started", 1)
