"""Run control with workers running: cancel, retry, delete, prune (and the worker's retention).

Every scenario ends with the counter invariants of tests/reference/invariants.py: what cancel,
retry and prune leave behind is what pgflow's own functions would have left.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from pgflow_kombu.client import Client
from pgflow_kombu.db.connect import connect
from pgflow_kombu.errors import RunCancelled, RunFailed, RunNotFound, RunNotRetryable
from pgflow_kombu.flows import Flow, StepContext
from pgflow_kombu.worker import PgmqSource, Worker
from tests.reference import install_realtime
from tests.reference.driver import WORKER_ID, Db
from tests.reference.invariants import assert_invariants
from tests.support.sql import test_query

# -- flows -------------------------------------------------------------------------------------

cancellable = Flow("cancellable", base_delay=0, timeout=60)
STARTED: list[tuple[str | None, int]] = []
SAW: list[tuple[str | None, int, bool]] = []
RELEASE = threading.Event()
AFTER_CALLS: list[int] = []


@cancellable.map
def long(item: int, ctx: StepContext) -> int:
    STARTED.append((ctx.run_id, item))
    deadline = time.monotonic() + 30
    while not ctx.cancelled and not RELEASE.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    SAW.append((ctx.run_id, item, ctx.cancelled))
    return item * 10


@cancellable.step
def after(long: list[int]) -> int:
    AFTER_CALLS.append(1)
    return sum(long)


acancel = Flow("acancel", base_delay=0, timeout=60)
ASYNC_STARTED = threading.Event()
ASYNC_CANCELLED = threading.Event()


@acancel.step
async def waits_async(run: int, ctx: StepContext) -> str:
    ASYNC_STARTED.set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        ASYNC_CANCELLED.set()
        raise
    return "late"


retryable = Flow("retryable", max_attempts=1, base_delay=0)
CALLS: dict[str, int] = {}
CALLS_LOCK = threading.Lock()


def _called(name: str) -> None:
    with CALLS_LOCK:
        CALLS[name] = CALLS.get(name, 0) + 1


def _bump(path: str) -> int:
    """A counter in a file (handlers in any process could share it)."""
    with CALLS_LOCK:
        counter = Path(path)
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
        return n


@retryable.step
def first(run: dict[str, Any]) -> list[int]:
    _called("first")
    return [1, 2, 3]


@retryable.map(over="first")
def square(x: int) -> int:
    return x * x


@retryable.step
def flaky(square: list[int], run: dict[str, Any]) -> int:
    if _bump(run["counter"]) <= run["failures"]:
        raise RuntimeError("not yet")
    return sum(square)


@retryable.step
def last(flaky: int) -> int:
    _called("last")
    return flaky + 1


guarded = Flow("guarded", max_attempts=1, base_delay=0)


@guarded.step(when_exhausted="skip")
def optional(run: dict[str, Any]) -> str:
    raise RuntimeError("never works")


@guarded.step
def check(run: dict[str, Any], optional: str | None = None) -> dict[str, bool]:
    return {"ok": run["ok"]}


@guarded.step(if_={"check": {"ok": True}}, when_unmet="fail")
def act(check: dict[str, bool]) -> str:
    return "acted"


quick = Flow("quick", base_delay=0)


@quick.step
def double(run: int) -> int:
    return run * 2


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    c = Client(db_url, poll_interval=0.2)
    yield c
    c.close()


@pytest.fixture
def conn(db_url: str) -> Iterator[Any]:
    with connect(db_url) as c:
        yield c


@pytest.fixture
def run_worker(db_url: str) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(flows: dict[str, Flow], *, kombu: bool = False, **options: Any) -> Worker:
        """A worker reading with pgmq directly, or through the pgflow:// transport (default of
        the command)."""
        options.setdefault("heartbeat_interval", 0.3)
        options.setdefault("stalled_after", 5.0)
        source = None if kombu else PgmqSource(db_url, poll_interval=0.05)
        worker = Worker(flows, db_url, source=source, **options)
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(5)


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    for each in (STARTED, SAW, AFTER_CALLS):
        each.clear()
    CALLS.clear()
    RELEASE.clear()
    ASYNC_STARTED.clear()
    ASYNC_CANCELLED.clear()
    yield
    RELEASE.set()  # let handlers still running end


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


def rows_of(url: str, name: str) -> list[Any]:
    with connect(url) as c:
        return list(c.execute(test_query(name)).fetchall())


def rows(conn: Any, name: str, **params: Any) -> list[Any]:
    return list(conn.execute(test_query(name), params).fetchall())


def live_messages(conn: Any, flow: str) -> int:
    statement = sql.SQL(test_query("live_messages")).format(sql.Identifier(f"q_{flow}"))
    return int(conn.execute(statement).fetchone()[0])


# -- cancel ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kombu", [False, True], ids=["pgmq", "kombu"])
def test_cancel_while_tasks_run_stops_the_run_everywhere(
    client: Client, conn: Any, run_worker: Callable[..., Worker], kombu: bool
) -> None:
    flows = {"cancellable": cancellable}
    # Each worker holds 3 tasks, 2 running and 1 waiting for a slot; 2 more stay queued.
    workers = [run_worker(flows, concurrency=2, prefetch=3, kombu=kombu) for _ in range(2)]
    run_id = client.start_flow(cancellable, [1, 2, 3, 4, 5, 6, 7, 8])
    wait_for(lambda: len(STARTED) == 4, what="four handlers running")
    wait_for(lambda: sum(w.held for w in workers) == 6, what="two tasks waiting for a slot")

    assert client.cancel_run(run_id, reason="operator said so") is True
    assert client.cancel_run(run_id) is False  # already finished

    # Every running handler sees ctx.cancelled (at the workers' next heartbeat) and returns.
    wait_for(lambda: len(SAW) == 4, what="the handlers to notice")
    assert all(cancelled for _run, _item, cancelled in SAW)
    wait_for(lambda: all(w.held == 0 for w in workers), what="the workers to settle")
    wait_for(lambda: sum(w.stats.stale for w in workers) == 6, what="six stale reports")
    time.sleep(1.0)  # anything that would still start would start now

    # The tasks waiting for a slot were never run, the queued ones never claimed.
    assert len(STARTED) == 4
    assert AFTER_CALLS == []
    run = client.get_run_with_states(run_id)
    assert run.status == "cancelled"
    assert run.cancel_reason == "operator said so"
    assert run.error_message == "[CANCELLED] operator said so"
    with pytest.raises(RunCancelled):
        client.wait(run_id, timeout=5)
    assert isinstance(RunCancelled("x", run=None), RunFailed)
    assert [r.run_id for r in client.list_runs(status="cancelled")] == [run_id]
    assert client.list_runs(status="failed") == []

    # pgflow's own row says failed; the late results were discarded.
    assert rows(conn, "pgflow_run_row", run_id=run_id) == [("failed", True)]
    tasks = rows(conn, "run_tasks", run_id=run_id)
    assert [(t[0], t[1], t[2], t[4], t[5]) for t in tasks] == [
        ("long", i, "failed", None, "[CANCELLED] operator said so") for i in range(8)
    ]
    assert sorted(t[3] for t in tasks) == [0, 0, 1, 1, 1, 1, 1, 1]
    steps = {s[0]: s for s in rows(conn, "run_steps", run_id=run_id)}
    assert steps["long"][1] == "failed"
    assert steps["after"][1] == "created"
    assert live_messages(conn, "cancellable") == 0
    assert sum(w.cancellations.cancelled_total for w in workers) == 2
    assert_invariants(conn)


def test_a_watcher_of_the_run_sees_it_cancelled(client: Client, conn: Any) -> None:
    client.compile_flow(quick.shape())
    run_id = client.start_flow(quick, 1)  # no worker: it waits
    seen: list[Any] = []
    watching = threading.Thread(target=lambda: seen.extend(client.events(run_id, timeout=30)))
    watching.start()
    wait_for(lambda: seen, what="the first events")
    assert client.cancel_run(run_id, reason="bye")
    watching.join(30)
    assert not watching.is_alive()
    assert [(e.event_type, e.step_slug, e.error_message) for e in seen] == [
        ("run:started", None, None),
        ("step:started", "double", None),
        ("step:failed", "double", "[CANCELLED] bye"),
        ("run:cancelled", None, "[CANCELLED] bye"),
    ]


def test_the_asyncio_pool_cancels_the_coroutine(
    client: Client, conn: Any, run_worker: Callable[..., Worker]
) -> None:
    worker = run_worker({"acancel": acancel}, pool="asyncio", concurrency=2)
    run_id = client.start_flow(acancel, 1)
    assert ASYNC_STARTED.wait(20)
    assert client.cancel_run(run_id) is True
    assert ASYNC_CANCELLED.wait(20)  # long before its 30 s sleep would end
    wait_for(lambda: worker.stats.stale == 1, what="the stale report")
    assert worker.pool_stats["late_discarded"] == 0
    assert client.get_run(run_id).status == "cancelled"
    ((_, _, status, _, output, error, _),) = rows(conn, "run_tasks", run_id=run_id)
    assert (status, output, error) == ("failed", None, "[CANCELLED] run cancelled")
    assert live_messages(conn, "acancel") == 0
    assert_invariants(conn)


def test_a_cancelled_run_can_be_retried_and_completes(
    client: Client, conn: Any, run_worker: Callable[..., Worker]
) -> None:
    run_worker({"cancellable": cancellable}, concurrency=3)
    run_id = client.start_flow(cancellable, [1, 2, 3])
    wait_for(lambda: len([s for s in STARTED if s[0] == str(run_id)]) == 3, what="3 running")
    assert client.cancel_run(run_id)
    wait_for(lambda: len([s for s in SAW if s[0] == str(run_id)]) == 3, what="3 noticed")
    assert client.get_run(run_id).status == "cancelled"
    RELEASE.set()

    assert client.retry_run(run_id) == 3
    assert rows(conn, "cancelled_row", run_id=run_id) == []
    run = client.wait(run_id, timeout=30)
    assert (run.status, run.output) == ("completed", {"after": 60})
    assert_invariants(conn)


def test_cancel_and_retry_refuse_what_they_cannot_do(client: Client, db_url: str) -> None:
    with pytest.raises(RunNotFound):
        client.cancel_run(uuid.uuid4())
    with pytest.raises(RunNotFound):
        client.retry_run(uuid.uuid4())
    with pytest.raises(RunNotFound):
        client.delete_run(uuid.uuid4())
    client.compile_flow(quick.shape())
    run_id = client.start_flow(quick, 1)
    with pytest.raises(RunNotRetryable, match="is started, not failed"):
        client.retry_run(run_id)


# -- retry -------------------------------------------------------------------------------------


def test_retry_after_a_failure_completes_with_the_right_outputs(
    client: Client, conn: Any, run_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    for _ in range(2):
        run_worker({"retryable": retryable}, concurrency=2)
    counter = str(tmp_path / "flaky.count")
    run_id = client.start_flow(retryable, {"counter": counter, "failures": 2})

    # Fails twice: retried after each failure (the requeued task's fields are checked without
    # workers racing, in test_retry_from_where_it_failed_keeps_the_counters_exact).
    for _ in range(2):
        with pytest.raises(RunFailed, match="not yet"):
            client.wait(run_id, timeout=30)
        steps = {s[0]: s for s in rows(conn, "run_steps", run_id=run_id)}
        assert [steps[s][1] for s in ("first", "square", "flaky", "last")] == [
            "completed",
            "completed",
            "failed",
            "created",
        ]
        assert_invariants(conn)
        assert client.retry_run(run_id) == 1
        assert_invariants(conn)
    run = client.wait(run_id, timeout=30)
    assert run.output == {"last": 15}
    assert CALLS == {"first": 1, "last": 1}  # completed steps kept their outputs
    tasks = {(t[0], t[1]): t for t in rows(conn, "run_tasks", run_id=run_id)}
    assert [tasks[("square", i)][4] for i in range(3)] == [1, 4, 9]
    assert tasks[("flaky", 0)][2:6] == ("completed", 1, 14, None)
    assert Path(counter).read_text() == "3"
    assert live_messages(conn, "retryable") == 0
    with pytest.raises(RunNotRetryable, match="is completed"):
        client.retry_run(run_id)
    assert_invariants(conn)


def test_retry_judges_an_unmet_condition_again_and_keeps_skipped_steps(
    client: Client, conn: Any, run_worker: Callable[..., Worker]
) -> None:
    run_worker({"guarded": guarded})
    run_id = client.start_flow(guarded, {"ok": False})
    with pytest.raises(RunFailed, match="Condition not met"):
        client.wait(run_id, timeout=30)
    wait_for(
        lambda: any(s.status == "skipped" for s in client.get_run_with_states(run_id).step_states)
    )
    assert_invariants(conn)

    # Nothing to requeue: the unmet step goes back to created, is judged again and fails again.
    assert client.retry_run(run_id) == 0
    run = client.get_run_with_states(run_id)
    assert run.status == "failed"
    states = {s.step_slug: s.status for s in run.step_states}
    assert states == {"check": "completed", "act": "failed", "optional": "skipped"}
    assert_invariants(conn)


# -- delete and prune --------------------------------------------------------------------------


def orphans(conn: Any) -> dict[str, int]:
    """Rows of every pgflow/pgflow_kombu table with a run_id, and messages of every pgmq queue
    and archive table, whose run is gone."""
    found: dict[str, int] = {}
    for schema, table in rows(conn, "tables_with_run_id"):
        statement = sql.SQL(test_query("orphans_of")).format(sql.Identifier(schema, table))
        found[f"{schema}.{table}"] = conn.execute(statement).fetchone()[0]
    for (table,) in rows(conn, "queue_tables"):
        statement = sql.SQL(test_query("messages_of_gone_runs")).format(sql.Identifier(table))
        found[f"pgmq.{table}"] = conn.execute(statement).fetchone()[0]
    return found


def count(conn: Any, schema: str, table: str) -> int:
    statement = sql.SQL(test_query("count_rows")).format(sql.Identifier(schema, table))
    return int(conn.execute(statement).fetchone()[0])


def test_delete_run_removes_every_row_and_message(
    client: Client, conn: Any, run_worker: Callable[..., Worker]
) -> None:
    worker = run_worker({"quick": quick})
    done = client.start_flow_sync(quick, 1, timeout=30)
    worker.stop(5)
    waiting = client.start_flow(quick, 2)  # queued, never run
    assert client.cancel_run(client.start_flow(quick, 3))
    assert count(conn, "pgmq", "a_quick") == 2 and live_messages(conn, "quick") == 1

    for run_id in (done.run_id, waiting):
        client.delete_run(run_id)
        with pytest.raises(RunNotFound):
            client.get_run(run_id)
    assert live_messages(conn, "quick") == 0
    assert count(conn, "pgmq", "a_quick") == 1  # the cancelled run's
    assert count(conn, "pgflow_kombu", "cancelled_runs") == 1
    assert all(n == 0 for n in orphans(conn).values()), orphans(conn)
    with pytest.raises(RunNotFound):
        client.delete_run(waiting)
    assert_invariants(conn)


def test_prune_deletes_old_finished_runs_in_batches_and_leaves_no_orphans(
    client: Client, conn: Any, run_worker: Callable[..., Worker]
) -> None:
    worker = run_worker({"quick": quick, "cancellable": cancellable}, concurrency=4)
    completed = [client.start_flow(quick, i) for i in range(20)]
    for run_id in completed:
        client.wait(run_id, timeout=30)
    worker.stop(5)
    # With a priority, each run also has a row in pgflow_kombu.run_controls (no foreign key).
    started = [client.start_flow(quick, i, priority=i) for i in range(5)]
    for run_id in started[:3]:
        assert client.cancel_run(run_id)
    failed_map = client.start_flow(cancellable, [1, 2])
    assert client.cancel_run(failed_map)
    old = completed[:15] + started[:3] + [failed_map]
    assert rows(conn, "age_finished_runs", run_ids=old, seconds=10 * 86400) == [(len(old),)]

    result = client.prune(older_than="7d", batch_size=4)
    assert (result.runs, result.archived_messages) == (len(old), 0)
    remaining = {r.run_id for r in client.list_runs(limit=100)}
    assert remaining == set(completed[15:]) | set(started[3:])
    assert live_messages(conn, "quick") == 2  # the two runs still waiting for a worker
    assert count(conn, "pgflow_kombu", "cancelled_runs") == 0
    assert count(conn, "pgflow_kombu", "run_controls") == 2
    assert all(n == 0 for n in orphans(conn).values()), orphans(conn)
    assert_invariants(conn)

    # The queue archives: messages archived long enough ago go too.
    for table in ("a_quick", "a_cancellable"):
        conn.execute(
            sql.SQL(test_query("age_archive")).format(sql.Identifier(table)),
            {"seconds": 10 * 86400},
        )
    result = client.prune(older_than=timedelta(days=7), batch_size=2)
    assert (result.runs, result.archived_messages) == (0, 5)
    assert count(conn, "pgmq", "a_quick") == 0
    assert_invariants(conn)


def test_worker_retention_prunes_once_across_workers_while_they_serve(
    client: Client, conn: Any, run_worker: Callable[..., Worker]
) -> None:
    first = run_worker({"quick": quick}, concurrency=4)
    old = client.start_many(quick, list(range(40)))
    for run_id in old:
        client.wait(run_id, timeout=30)
    first.stop(5)
    assert rows(conn, "age_finished_runs", run_ids=old, seconds=8 * 86400) == [(40,)]

    workers = [
        run_worker({"quick": quick}, retention="7d", retention_interval=0.2, concurrency=2)
        for _ in range(2)
    ]
    fresh = [client.start_flow(quick, i) for i in range(20)]
    for run_id in fresh:
        assert client.wait(run_id, timeout=30).output == {"double": 2 * (fresh.index(run_id))}
    wait_for(lambda: count(conn, "pgflow", "runs") == 20, what="the old runs to be pruned")
    wait_for(lambda: sum(w.retention.rounds for w in workers if w.retention) >= 2)
    # Each old run was deleted by exactly one worker.
    assert sum(w.retention.pruned_runs for w in workers if w.retention) == 40
    assert {r.run_id for r in client.list_runs(limit=100)} == set(fresh)
    assert all(n == 0 for n in orphans(conn).values()), orphans(conn)
    assert_invariants(conn)


# -- what a pgflow 0.8.1 client sees -----------------------------------------------------------


def test_a_typescript_client_reads_a_cancelled_run_as_failed(
    any_schema_url: str,
) -> None:
    if rows_of(any_schema_url, "has_realtime_log") == [(False,)]:
        install_realtime(any_schema_url, "log")
    db = Db(any_schema_url, "db")
    client = Client(any_schema_url)
    try:
        db.add_worker()
        db.call("create_flow", flow_slug="ts", max_attempts=1)
        db.call("add_step", flow_slug="ts", step_slug="a")
        db.call("add_step", flow_slug="ts", step_slug="b", deps_slugs=["a"])
        (run,) = db.call("start_flow", flow_slug="ts", input={"x": 1})
        run_id = run["run_id"]
        (msg_id,) = db.read("ts")
        (task,) = db.call("start_tasks", flow_slug="ts", msg_ids=[msg_id], worker_id=WORKER_ID)

        assert client.cancel_run(run_id, reason="stop")
        # The events a 0.8.1 client subscribes to, as a final fail_task sends them.
        events = db.events()
        assert [e["event"] for e in events[-2:]] == ["step:a:failed", "run:failed"]
        assert events[-1]["payload"]["error_message"] == "[CANCELLED] stop"
        assert events[-1]["payload"]["status"] == "failed"
        # pgflow.get_run_with_states is what PgflowSqlClient.getRunWithStates calls.
        (row,) = db.execute("get_run_with_states", {"run_id": run_id})
        payload = row["data"]
        assert payload["run"]["status"] == "failed"
        assert payload["run"]["failed_at"] is not None
        states = {s["step_slug"]: s for s in payload["steps"]}
        assert states["a"]["status"] == "failed"
        assert states["a"]["error_message"] == "[CANCELLED] stop"
        assert states["b"]["status"] == "created"
        # A 0.8.1 worker: its late completion changes nothing, nothing is left to read.
        db.call("complete_task", run_id=run_id, step_slug="a", task_index=0, output=1)
        assert db.read("ts") == []
        assert client.get_run(run_id).status == "cancelled"

        # Retried, a 0.8.1 worker picks the task up again and finishes the run.
        assert client.retry_run(run_id) == 1
        for step in ("a", "b"):
            (msg_id,) = db.read("ts")
            (task,) = db.call("start_tasks", flow_slug="ts", msg_ids=[msg_id], worker_id=WORKER_ID)
            assert task["step_slug"] == step
            db.call("complete_task", run_id=run_id, step_slug=step, task_index=0, output=step)
        assert client.get_run(run_id).status == "completed"
        with connect(any_schema_url) as conn:
            assert_invariants(conn)
    finally:
        client.close()
        db.close()


def test_retry_from_where_it_failed_keeps_the_counters_exact(any_schema_url: str) -> None:
    """The differential tests' exhausted-retries scenario, then retried: every task that did not
    complete is queued afresh, the step the failure kept from starting starts when its
    dependency completes, and the counters stay what pgflow's functions expect throughout."""
    db = Db(any_schema_url, "db")
    client = Client(any_schema_url)
    try:
        db.add_worker()
        db.call("create_flow", flow_slug="doomed")
        db.call("add_step", flow_slug="doomed", step_slug="bad", max_attempts=2, base_delay=0)
        db.call("add_step", flow_slug="doomed", step_slug="good")
        db.call(
            "add_step", flow_slug="doomed", step_slug="queued_map", step_type="map", start_delay=60
        )
        db.call("add_step", flow_slug="doomed", step_slug="never", deps_slugs=["bad"])
        (run,) = db.call("start_flow", flow_slug="doomed", input=[1, 2])
        run_id = run["run_id"]

        def claim() -> list[dict[str, Any]]:
            ids = db.read("doomed")
            return db.call("start_tasks", flow_slug="doomed", msg_ids=ids, worker_id=WORKER_ID)

        def fail(task: dict[str, Any], error: str) -> None:
            db.call(
                "fail_task",
                run_id=run_id,
                step_slug=task["step_slug"],
                task_index=task["task_index"],
                error_message=error,
            )

        bad, _good = sorted(claim(), key=lambda t: t["step_slug"])
        fail(bad, "first")
        (bad,) = claim()
        fail(bad, "second")
        assert client.get_run(run_id).status == "failed"
        assert_invariants(db.conn)
        archived = sql.SQL(test_query("count_rows")).format(sql.Identifier("pgmq", "a_doomed"))
        assert db.conn.execute(archived).fetchone() == {"n": 4}

        # bad (failed), good (started when the run failed), the map's two queued tasks.
        assert client.retry_run(run_id) == 4
        assert_invariants(db.conn)
        tasks = db.execute("run_tasks", {"run_id": run_id})
        assert {
            (t["step_slug"], t["task_index"], t["status"], t["attempts_count"]) for t in tasks
        } == {
            ("bad", 0, "queued", 0),
            ("good", 0, "queued", 0),
            ("queued_map", 0, "queued", 0),
            ("queued_map", 1, "queued", 0),
        }
        assert all(t["error_message"] is None for t in tasks)
        steps = {s["step_slug"]: s for s in db.execute("run_steps", {"run_id": run_id})}
        assert steps["bad"]["status"] == "started" and steps["never"]["status"] == "created"

        # Every fresh message is visible at once (the map's start delay applied to its first
        # send only); the old ones left the archive.
        assert db.conn.execute(archived).fetchone() == {"n": 0}
        claimed = claim()
        assert len(claimed) == 4
        for task in claimed:
            db.call(
                "complete_task",
                run_id=run_id,
                step_slug=task["step_slug"],
                task_index=task["task_index"],
                output=f"{task['step_slug']}{task['task_index']}",
            )
        assert_invariants(db.conn)
        (never,) = claim()
        assert never["step_slug"] == "never"
        assert never["input"] == {"run": [1, 2], "bad": "bad0"}
        db.call("complete_task", run_id=run_id, step_slug="never", task_index=0, output="done")
        finished = client.get_run(run_id)
        assert finished.status == "completed"
        assert finished.output == {
            "good": "good0",
            "never": "done",
            "queued_map": ["queued_map0", "queued_map1"],
        }
        assert_invariants(db.conn)
    finally:
        client.close()
        db.close()
