"""The worker in this process (background thread) against a real database."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from psycopg import sql

from pgflow_kombu.client import Client
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.urls import database_of
from pgflow_kombu.flows import Flow
from pgflow_kombu.observability.hooks import Hooks
from pgflow_kombu.worker import ClaimingSource, ExitCode, PgmqSource, Worker
from tests.support.sql import test_query

SOURCES = ["claim", "kombu", "pgmq"]


def make_source(kind: str, url: str) -> Any:
    if kind == "claim":
        return ClaimingSource(url)
    if kind == "pgmq":
        return PgmqSource(url, poll_interval=0.05)
    from pgflow_kombu.worker.consumer import KombuSource

    return KombuSource(url)


@pytest.fixture(params=SOURCES)
def source_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    c = Client(db_url, poll_interval=0.2)
    yield c
    c.close()


@pytest.fixture
def run_worker(db_url: str, source_kind: str) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(flows: dict[str, Flow], **options: Any) -> Worker:
        options.setdefault("heartbeat_interval", 0.5)
        options.setdefault("stalled_after", 3.0)
        worker = Worker(flows, db_url, source=make_source(source_kind, db_url), **options)
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(5)


# -- flows -------------------------------------------------------------------------------------

diamond = Flow("diamond", base_delay=0)


@diamond.step
def root(run: int) -> int:
    return run + 1


@diamond.step
def left(root: int) -> int:
    return root * 2


@diamond.step
def right(root: int) -> int:
    return root * 3


@diamond.step
def join(left: int, right: int) -> int:
    return left + right


fanout = Flow("fanout")


@fanout.map
def square(x: int) -> int:
    return x * x


@fanout.step
def total(square: list[int]) -> int:
    return sum(square)


flaky = Flow("flaky", max_attempts=3, base_delay=0)
FLAKY_CALLS: dict[str, int] = {}


@flaky.step
def sometimes(run: dict[str, Any]) -> str:
    key = run["key"]
    FLAKY_CALLS[key] = FLAKY_CALLS.get(key, 0) + 1
    if FLAKY_CALLS[key] <= run["failures"]:
        raise RuntimeError(f"failure number {FLAKY_CALLS[key]}")
    return "ok"


slow = Flow("slow", max_attempts=2, base_delay=0, timeout=1)
GATE = threading.Event()


@slow.step
def hangs(run: Any) -> str:
    GATE.wait(10)
    return "late"


held = Flow("held", base_delay=0)
HELD_RUNNING = threading.Event()
HELD_GATE = threading.Event()


@held.step
def waits(run: int) -> int:
    HELD_RUNNING.set()
    HELD_GATE.wait(30)
    return run + 1


nap = Flow("nap")
NAPPING = threading.Event()


@nap.step
def naps(run: float) -> str:
    NAPPING.set()
    time.sleep(run)
    return "rested"


# -- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["threads", "processes", "asyncio"])
def test_diamond_and_map_flows_complete(
    run_worker: Callable[..., Worker], client: Client, pool: str
) -> None:
    worker = run_worker({"diamond": diamond, "fanout": fanout}, pool=pool, concurrency=3)
    runs = [client.start_flow("diamond", i) for i in range(10)]
    maps = [client.start_flow("fanout", list(range(n))) for n in (0, 1, 5)]
    for i, run_id in enumerate(runs):
        assert client.wait(run_id, timeout=30).output == {"join": (i + 1) * 5}
    assert [client.wait(r, timeout=30).output for r in maps] == [
        {"total": 0},
        {"total": 0},
        {"total": 30},
    ]
    assert worker.stats.claimed == 10 * 4 + 6 + 3


def test_errors_are_retried_then_fail_the_run_with_type_and_message(
    run_worker: Callable[..., Worker], client: Client
) -> None:
    run_worker({"flaky": flaky})
    FLAKY_CALLS.clear()
    recovers = client.start_flow("flaky", {"key": "r", "failures": 2})
    gives_up = client.start_flow("flaky", {"key": "g", "failures": 5})
    ok = client.wait(recovers, timeout=30)
    assert ok.output == {"sometimes": "ok"}
    assert ok.step_states[0].tasks[0].attempts_count == 3
    failed = client.wait(gives_up, timeout=30, raise_on_failure=False)
    assert failed.status == "failed"
    task = failed.step_states[0].tasks[0]
    assert (task.status, task.attempts_count) == ("failed", 3)
    assert task.error_message == "RuntimeError: failure number 3"
    assert failed.error_message == "RuntimeError: failure number 3"


def test_a_hung_handler_times_out_and_never_completes_late(
    run_worker: Callable[..., Worker], client: Client
) -> None:
    GATE.clear()
    worker = run_worker({"slow": slow, "nap": nap}, concurrency=1)
    run_id = client.start_flow("slow", None)
    failed = client.wait(run_id, timeout=30, raise_on_failure=False)
    task = failed.step_states[0].tasks[0]
    assert (failed.status, task.status, task.attempts_count) == ("failed", "failed", 2)
    assert task.error_message is not None and task.error_message.startswith("TimeoutError:")
    # Both hung slots were replaced: the single-slot worker still runs other work.
    assert client.wait(client.start_flow("nap", 0), timeout=30).status == "completed"
    assert worker.pool_stats["timed_out"] == 2
    GATE.set()  # the stuck handlers return now; their results must be discarded
    deadline = time.monotonic() + 5
    while worker.pool_stats["late_discarded"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.pool_stats["late_discarded"] == 2
    assert client.get_run_with_states(run_id).step_states[0].tasks[0].status == "failed"


def test_graceful_stop_finishes_running_work_and_hands_back_the_rest(
    run_worker: Callable[..., Worker], client: Client
) -> None:
    NAPPING.clear()
    worker = run_worker({"nap": nap}, concurrency=1, prefetch=4)
    runs = [client.start_flow("nap", 1.0) for _ in range(4)]
    deadline = time.monotonic() + 10
    while worker.held < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.held == 4
    # Holding four is not yet running one: on a busy machine the stop could come first.
    assert NAPPING.wait(10)
    assert worker.stop(10) == ExitCode.OK
    states = [client.get_run_with_states(r) for r in runs]
    done = [s for s in states if s.status == "completed"]
    waiting = [s.step_states[0].tasks[0] for s in states if s.status == "started"]
    assert len(done) == 1
    assert [(t.status, t.attempts_count) for t in waiting] == [("queued", 0)] * 3
    assert worker.stats.released == 3


def test_a_backlog_is_never_claimed_beyond_the_prefetch(
    run_worker: Callable[..., Worker], client: Client
) -> None:
    # Read on the loop thread right after each claim, before any of its tasks can finish.
    held_after_claims: list[int] = []
    workers: list[Worker] = []
    hooks = Hooks()
    hooks.on_tasks_claimed(lambda batch: held_after_claims.append(workers[0].held))
    workers.append(run_worker({"nap": nap}, concurrency=2, prefetch=3, hooks=hooks))
    runs = [client.start_flow("nap", 0.05) for _ in range(12)]
    assert [client.wait(r, timeout=60).status for r in runs] == ["completed"] * len(runs)
    assert held_after_claims and max(held_after_claims) == 3  # full, never beyond


def test_a_report_refused_for_a_lock_timeout_is_sent_again_and_completes_once(
    run_worker: Callable[..., Worker],
    client: Client,
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Every session the worker opens from now on gives up waiting for a lock after 100 ms.
    with connect(db_url) as conn:
        stmt = sql.SQL(test_query("worker_database_lock_timeout"))
        conn.execute(stmt.format(sql.Identifier(database_of(db_url))))
    caplog.set_level(logging.DEBUG, logger="pgflow_kombu.worker")
    HELD_RUNNING.clear()
    HELD_GATE.clear()
    worker = run_worker({"held": held}, concurrency=1)
    run_id = client.start_flow("held", 1)
    assert HELD_RUNNING.wait(30)

    def retries() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", None) == "report_retry"]

    # Another transaction holds the run's row while the handler finishes: report_tasks cannot
    # lock it in time and answers 'retry', again and again, until the row is free.
    with connect(db_url, autocommit=False) as holder:
        holder.execute(test_query("worker_lock_run"), {"run_id": run_id})
        HELD_GATE.set()
        deadline = time.monotonic() + 30
        while len(retries()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get_run(run_id).status == "started"
        holder.rollback()
    assert len(retries()) >= 2
    assert all("lock timeout" in r.getMessage() for r in retries())
    assert client.wait(run_id, timeout=30).output == {"waits": 2}
    task = client.get_run_with_states(run_id).step_states[0].tasks[0]
    assert (task.status, task.attempts_count, task.error_message) == ("completed", 1, None)
    deadline = time.monotonic() + 5
    while worker.stats.completed < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (worker.stats.completed, worker.stats.failed, worker.stats.stale) == (1, 0, 0)


def test_a_deprecated_worker_stops_taking_work(
    run_worker: Callable[..., Worker], client: Client, db_url: str
) -> None:
    worker = run_worker({"nap": nap})
    assert client.wait(client.start_flow("nap", 0), timeout=30).status == "completed"
    with connect(db_url) as conn:
        conn.execute(test_query("worker_deprecate_all"))
    assert worker.wait_stopped(10)
    assert worker.exit_code == ExitCode.OK
    run_id = client.start_flow("nap", 0)
    time.sleep(0.5)
    assert client.get_run(run_id).status == "started"


def test_worker_rows_name_each_served_queue(run_worker: Callable[..., Worker], db_url: str) -> None:
    worker = run_worker({"nap": nap, "fanout": fanout})
    with connect(db_url) as conn:
        rows = conn.execute(test_query("worker_rows")).fetchall()
    assert {(str(r[0]), r[1]) for r in rows} == {(v, k) for k, v in worker.worker_ids.items()}
    assert all(r[2].startswith("pgflow-kombu:") and not r[3] for r in rows)


camel = Flow("CamelCase")


@camel.step
def shout(run: str) -> str:
    return run.upper()


def test_a_flow_slug_in_mixed_case_is_served(
    run_worker: Callable[..., Worker], client: Client
) -> None:
    # pgmq keeps its queue in a lower-case table; deliveries still name the flow's own slug.
    run_worker({"CamelCase": camel})
    assert client.wait(client.start_flow("CamelCase", "hi"), timeout=30).output == {"shout": "HI"}
