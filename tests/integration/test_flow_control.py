"""Flow control across workers: concurrency and rate limits, priorities, fairness, and failures
that are not retried.

The limits are checked by four worker processes at once; each handler records when it ran (its
output, or a marker file for an attempt that is killed) and the tests check the overlap.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pgflow_kombu import PgFlow, Reject
from pgflow_kombu.client import Client
from pgflow_kombu.client.flows import write_limits
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.queries import query
from pgflow_kombu.flows import Flow
from pgflow_kombu.worker import PgmqSource, Worker
from pgflow_kombu.worker.consumer import KombuSource
from tests.e2e_apps import limits
from tests.e2e_apps.harness import WorkerProcess
from tests.support.sql import test_query

APP = "tests.e2e_apps.limits:app"
FAST = ["--heartbeat-interval", "0.5", "--stalled-after", "2", "--concurrency", "4"]


def tasks_of(url: str, flow_slug: str) -> list[dict[str, Any]]:
    with connect(url) as conn:
        cursor = conn.execute(test_query("limits_tasks_of_flow"), {"flow_slug": flow_slug})
        columns = [c.name for c in cursor.description or ()]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def wait_finished(url: str, flow_slug: str, timeout: float = 120.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    with connect(url) as conn:  # one connection: the server's slots are shared with the workers
        while True:
            row = conn.execute(
                test_query("limits_unfinished_runs"), {"flow_slug": flow_slug}
            ).fetchone()
            if row is not None and row[0] == 0:
                break
            assert time.monotonic() < deadline, f"{flow_slug}: {row[0] if row else '?'} left"
            time.sleep(0.1)
    return tasks_of(url, flow_slug)


def max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def start_workers(
    url: str, count: int, *extra: str, env: dict[str, str] | None = None
) -> list[WorkerProcess]:
    workers = [WorkerProcess(url, *FAST, *extra, app=APP, env=env) for _ in range(count)]
    for worker in workers:
        worker.wait_ready()
    return workers


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.__exit__(None)


@contextmanager
def borrowed(url: str, *items: Any) -> Iterator[PgFlow]:
    """An app on the test database serving flows of ``tests.e2e_apps.limits`` for a while: a flow
    belongs to one app, so each is detached from the module's app, then handed back."""
    app = PgFlow(url)
    try:
        for item in items:
            item.bind(None)
            app.register(item)
        yield app
    finally:
        for item in items:
            item.bind(limits.app)
        app.close()


def start_runs(url: str, task: Any, inputs: list[dict[str, Any]], **options: Any) -> None:
    with borrowed(url, task) as app:
        app.start_many(task.slug, inputs, **options)


# -- concurrency ---------------------------------------------------------------------------------


def test_four_workers_never_run_more_than_max_concurrency_and_deferrals_cost_no_attempt(
    db_url: str, workers: list[WorkerProcess]
) -> None:
    start_runs(db_url, limits.two_at_a_time, [{"n": i} for i in range(16)])
    workers += start_workers(db_url, 4, "--flows", "two_at_a_time")
    done = wait_finished(db_url, "two_at_a_time")
    assert [t["status"] for t in done] == ["completed"] * 16
    assert {t["attempts_count"] for t in done} == {1}  # deferred claims burned no attempt
    spans = [(t["output"]["start"], t["output"]["end"]) for t in done]
    assert max_overlap(spans) == 2
    assert len({t["output"]["pid"] for t in done}) >= 2  # several workers took part


def test_a_concurrency_key_limits_each_key_not_the_flow(
    db_url: str, workers: list[WorkerProcess]
) -> None:
    inputs = [{"customer": c, "n": i} for i in range(4) for c in ("acme", "bolt", "core")]
    start_runs(db_url, limits.one_per_customer, inputs)
    workers += start_workers(db_url, 4, "--flows", "one_per_customer")
    done = wait_finished(db_url, "one_per_customer")
    assert [t["status"] for t in done] == ["completed"] * 12
    assert {t["attempts_count"] for t in done} == {1}
    for customer in ("acme", "bolt", "core"):
        spans = [
            (t["output"]["start"], t["output"]["end"])
            for t in done
            if t["output"]["customer"] == customer
        ]
        assert len(spans) == 4
        assert max_overlap(spans) == 1, customer
    everyone = [(t["output"]["start"], t["output"]["end"]) for t in done]
    assert max_overlap(everyone) >= 2  # different customers did run side by side


def test_a_step_limit_keyed_by_a_function_of_the_run_input(
    db_url: str, workers: list[WorkerProcess]
) -> None:
    with borrowed(db_url, limits.staged) as app:
        app.start_many("staged", [{"region": r, "n": i} for i in range(3) for r in ("eu", "us")])
    workers += start_workers(db_url, 4, "--flows", "staged")
    done = wait_finished(db_url, "staged")
    assert [t["status"] for t in done] == ["completed"] * 6
    for region in ("eu", "us"):
        spans = [
            (t["output"]["start"], t["output"]["end"])
            for t in done
            if t["output"]["region"] == region
        ]
        assert max_overlap(spans) == 1, region


def test_a_killed_worker_holds_its_slot_until_recovery_frees_it(
    db_url: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    start_runs(db_url, limits.solo, [{"n": i} for i in range(5)])
    env = {"LIMITS_MARKS": str(tmp_path)}
    workers += start_workers(db_url, 4, "--flows", "solo", env=env)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("*.json")):
        assert time.monotonic() < deadline, "no handler started"
        time.sleep(0.02)
    first = json.loads(next(iter(tmp_path.glob("*.json"))).read_text())
    victim = next(w for w in workers if w.pid == first["pid"])
    victim.kill()  # SIGKILL mid-task: its task stays 'started' until recovery
    killed_at = time.time()
    done = wait_finished(db_url, "solo")
    assert [t["status"] for t in done] == ["completed"] * 5
    by_run = {str(t["run_id"]): t for t in done}
    # The killed attempt counted (stalled recovery failed it); every other task needed one.
    assert by_run[first["run_id"]]["attempts_count"] == 2
    assert sorted(t["attempts_count"] for t in done) == [1, 1, 1, 1, 2]
    spans = [(t["output"]["start"], t["output"]["end"]) for t in done]
    spans.append((first["start"], killed_at))
    assert max_overlap(spans) == 1
    # Nothing ran while the dead worker's slot was held: the next start came after recovery.
    later = [s for s, _ in spans if s > first["start"]]
    assert min(later) >= killed_at


# -- rate limits ---------------------------------------------------------------------------------


def test_a_rate_limit_holds_across_four_workers(db_url: str, workers: list[WorkerProcess]) -> None:
    start_runs(db_url, limits.rated, [{"n": i} for i in range(14)])
    workers += start_workers(db_url, 4, "--flows", "rated")
    done = wait_finished(db_url, "rated")
    assert [t["status"] for t in done] == ["completed"] * 14
    assert {t["attempts_count"] for t in done} == {1}
    starts = sorted(t["output"]["start"] for t in done)
    capacity, per_second = 4, 2.0  # "4/2s": a bucket of 4, refilled at 2 tokens a second
    for i in range(len(starts)):
        for j in range(i, len(starts)):
            # The starts in [starts[i], starts[j]]: at most a full bucket plus the refill (one
            # token of slack for the time between a claim and its handler's start).
            assert j - i + 1 <= capacity + per_second * (starts[j] - starts[i]) + 1, (i, j)
    assert starts[-1] - starts[0] >= (14 - capacity - 1) / per_second - 0.5


# -- priorities and fairness ---------------------------------------------------------------------


def recording_flow(slug: str, order: list[tuple[str, int]], **options: Any) -> Flow:
    flow = Flow(slug, base_delay=0, **options)

    @flow.step
    def work(run: dict[str, int]) -> int:
        order.append((slug, run["n"]))
        time.sleep(0.02)
        return run["n"]

    return flow


@pytest.mark.parametrize("source_kind", ["claim", "kombu", "pgmq"])
def test_higher_priority_runs_of_a_backlog_are_claimed_first(db_url: str, source_kind: str) -> None:
    order: list[tuple[str, int]] = []
    flow = recording_flow("ranked", order, priority=1)
    app = PgFlow(db_url)
    app.register(flow)
    try:
        app.start_many("ranked", [{"n": i} for i in range(8)], priority=0)
        app.start_many("ranked", [{"n": 100 + i} for i in range(4)])  # the flow's default: 1
        app.start_many("ranked", [{"n": 200 + i} for i in range(4)], priority=5)
        source: Any = None  # the default: read and claim in one statement
        if source_kind == "pgmq":
            source = PgmqSource(db_url, poll_interval=0.05)
        elif source_kind == "kombu":
            source = KombuSource(db_url)
        worker = Worker({"ranked": flow}, db_url, concurrency=1, source=source)
        worker.start()
        try:
            deadline = time.monotonic() + 60
            while len(order) < 16:
                assert time.monotonic() < deadline, order
                time.sleep(0.05)
        finally:
            worker.stop(10)
    finally:
        app.close()
    ranks = [n // 100 for _, n in order]
    assert ranks == sorted(ranks, key=lambda r: {2: 0, 1: 1, 0: 2}[r]), ranks


@pytest.mark.parametrize("source_kind", ["kombu", "pgmq"])
def test_a_busy_flow_does_not_starve_another_served_by_the_same_worker(
    db_url: str, source_kind: str
) -> None:
    order: list[tuple[str, int]] = []
    busy = recording_flow("busy", order)
    quiet = recording_flow("quiet", order)
    app = PgFlow(db_url)
    app.register(busy)
    app.register(quiet)
    try:
        app.start_many("busy", [{"n": i} for i in range(40)])
        app.start_many("quiet", [{"n": i} for i in range(4)])
        source: Any = None  # the default: read and claim in one statement
        if source_kind == "pgmq":
            source = PgmqSource(db_url, poll_interval=0.05)
        elif source_kind == "kombu":
            source = KombuSource(db_url)
        worker = Worker({"busy": busy, "quiet": quiet}, db_url, concurrency=1, source=source)
        worker.start()
        try:
            deadline = time.monotonic() + 60
            while len(order) < 44:
                assert time.monotonic() < deadline, order
                time.sleep(0.05)
        finally:
            worker.stop(10)
    finally:
        app.close()
    last_quiet = max(i for i, (slug, _) in enumerate(order) if slug == "quiet")
    # Served in turns: the quiet flow's 4 tasks are done long before the busy flow's 40.
    assert last_quiet < 16, order


# -- failures that are not retried ---------------------------------------------------------------


def test_reject_and_invalid_input_fail_at_once_other_errors_are_retried(db_url: str) -> None:
    with borrowed(db_url, limits.declines, limits.flaky, limits.typed) as app:
        declined = app.start_flow("declines", {"n": 1})
        retried = app.start_flow("flaky", {"n": 2})
        valid = app.start_flow("typed", {"n": 21})
        # Bypass the app's checks: input as another client could send it.
        invalid = app.client.start_flow("typed", {"n": "not a number"})
        worker = Worker(
            {t.slug: t.flow for t in (limits.declines, limits.flaky, limits.typed)},
            db_url,
            concurrency=2,
        )
        worker.start()
        try:
            for slug in ("declines", "flaky", "typed"):
                wait_finished(db_url, slug, timeout=60)
        finally:
            worker.stop(10)
        assert valid.wait(10).output == {"typed": 42}
    by_run = {
        str(t["run_id"]): t
        for slug in ("declines", "flaky", "typed")
        for t in tasks_of(db_url, slug)
    }
    rejected = by_run[str(declined.run_id)]
    assert (rejected["status"], rejected["run_status"], rejected["attempts_count"]) == (
        "failed",
        "failed",
        1,
    )
    assert rejected["error_message"] == "PaymentDeclined: card 1 declined"
    bad_input = by_run[str(invalid)]
    assert (bad_input["status"], bad_input["attempts_count"]) == ("failed", 1)
    assert "StepInputError" in bad_input["error_message"]
    plain = by_run[str(retried.run_id)]
    assert (plain["status"], plain["attempts_count"]) == ("failed", 3)


def test_reject_is_not_retried_in_eager_mode() -> None:
    with pytest.raises(Exception) as caught:
        limits.declines.flow.run_eager({"n": 3}, retries=True)
    assert isinstance(caught.value.__cause__, Reject)
    assert caught.value.attempts == 1  # type: ignore[attr-defined]


# -- one claim, step by step ---------------------------------------------------------------------


def claim(conn: Any, slug: str, worker_id: str) -> tuple[list[int], list[int]]:
    """Read every visible message of the flow and claim them in one call: (read, claimed)."""
    read = [
        r[0]
        for r in conn.execute(
            query("worker.read_messages"), {"queue_name": slug, "vt": 30, "qty": 100}
        ).fetchall()
    ]
    rows = conn.execute(
        query("worker.claim_tasks"),
        {"flow_slug": slug, "msg_ids": read, "worker_id": worker_id, "read_visibility": 30},
    ).fetchall()
    return read, [row[3] for row in rows]


def message_state(conn: Any, slug: str, msg_id: int) -> dict[str, Any]:
    statement = sql.SQL(test_query("limits_task_by_message")).format(sql.Identifier(f"q_{slug}"))
    cursor = conn.execute(statement, {"flow_slug": slug, "msg_id": msg_id})
    columns = [c.name for c in cursor.description or ()]
    row = cursor.fetchone()
    assert row is not None
    return dict(zip(columns, row, strict=True))


def test_a_claim_defers_what_is_over_a_limit_without_counting_an_attempt(db_url: str) -> None:
    flow = Flow("per_customer", rate_limit="1/h", concurrency_key="customer")

    @flow.step
    def pay(run: dict[str, Any]) -> int:
        return 1

    app = PgFlow(db_url)
    app.register(flow)
    worker_id = str(uuid.uuid4())
    try:
        for customer in ("acme", "acme", "bolt"):
            app.start_flow("per_customer", {"customer": customer})
        with connect(db_url) as conn:
            conn.execute(
                query("worker.register"),
                {"worker_ids": [worker_id], "queue_names": ["per_customer"], "function_name": "t"},
            )
            read, claimed = claim(conn, "per_customer", worker_id)
            assert len(read) == 3 and len(claimed) == 2  # one token per customer an hour
            (deferred,) = set(read) - set(claimed)
            state = message_state(conn, "per_customer", deferred)
            # Still queued, no attempt counted, back when the bucket holds a token again.
            assert (state["status"], state["attempts_count"]) == ("queued", 0)
            assert state["input"] == {"customer": "acme"}
            assert 3000 < state["visible_in"] <= 3600
            assert {
                message_state(conn, "per_customer", m)["input"]["customer"] for m in claimed
            } == {
                "acme",
                "bolt",
            }
    finally:
        flow.bind(None)
        app.close()


def test_a_claim_runs_its_higher_priority_tasks_first(db_url: str) -> None:
    flow = recording_flow("mixed", [], priority=0, max_concurrency=2)
    app = PgFlow(db_url)
    app.register(flow)
    worker_id = str(uuid.uuid4())
    try:
        low = app.start_flow("mixed", {"n": 1}).run_id
        high = app.start_flow("mixed", {"n": 2}, priority=3).run_id
        mid = app.start_flow("mixed", {"n": 3}, priority=1).run_id
        with connect(db_url) as conn:
            conn.execute(
                query("worker.register"),
                {"worker_ids": [worker_id], "queue_names": ["mixed"], "function_name": "t"},
            )
            read = [
                r[0]
                for r in conn.execute(
                    query("worker.read_messages"), {"queue_name": "mixed", "vt": 30, "qty": 100}
                ).fetchall()
            ]
            rows = conn.execute(
                query("worker.claim_tasks"),
                {
                    "flow_slug": "mixed",
                    "msg_ids": read,
                    "worker_id": worker_id,
                    "read_visibility": 30,
                },
            ).fetchall()
        # Two slots: the two highest priorities, highest first; the lowest waits.
        assert [row[0] for row in rows] == [high, mid]
        assert low not in [row[0] for row in rows]
    finally:
        flow.bind(None)
        app.close()


# -- limits stored with the definition -----------------------------------------------------------


def stored_limits(url: str, slug: str) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return conn.execute(test_query("limits_stored"), {"flow_slug": slug}).fetchall()


def register_worker(conn: Any, slug: str) -> str:
    worker_id = str(uuid.uuid4())
    conn.execute(
        query("worker.register"),
        {"worker_ids": [worker_id], "queue_names": [slug], "function_name": "t"},
    )
    return worker_id


def run_of(conn: Any, slug: str, msg_ids: Sequence[int]) -> dict[int, Any]:
    """The run of each claimed message."""
    rows = conn.execute(test_query("limits_run_of_messages"), {"flow_slug": slug, "ids": msg_ids})
    return dict(rows.fetchall())


def test_upsert_stores_the_limits_with_the_definition_and_removes_undeclared_ones(
    db_url: str,
) -> None:
    client = Client(db_url)
    try:
        client.upsert_flow(
            "capped",
            steps=[{"slug": "pay", "rate_limit": "1/h", "concurrency_key": "customer"}],
            max_concurrency=2,
        )
        assert stored_limits(db_url, "capped") == [
            ("", 2, None, None, False, None, None, False),
            ("pay", None, 1, 3600.0, True, "customer", None, False),
        ]
        # No worker ever served the flow: the first claim already applies its limits.
        runs = {client.start_flow("capped", {"customer": c}): c for c in ("a", "a", "b", "c")}
        with connect(db_url) as conn:
            read, claimed = claim(conn, "capped", register_worker(conn, "capped"))
            claimed_runs = run_of(conn, "capped", claimed)
        assert len(read) == 4 and len(claimed) == 2  # two slots; one token a customer
        assert sorted(runs[claimed_runs[m]] for m in claimed) == ["a", "b"]

        # Limits removed from the definition are removed from the database with it.
        client.upsert_flow("capped", steps=[{"slug": "pay"}])
        assert stored_limits(db_url, "capped") == []
        for customer in ("a", "a", "a"):
            client.start_flow("capped", {"customer": customer})
        with connect(db_url) as conn:
            read, claimed = claim(conn, "capped", register_worker(conn, "capped"))
        assert len(read) == len(claimed) == 3
    finally:
        client.close()


def test_ensure_flow_compiles_a_new_flow_with_its_limits(db_url: str) -> None:
    flow = Flow("ensured", max_concurrency=3, priority=2)

    @flow.step
    def only(run: dict[str, Any]) -> int:
        return 1

    app = PgFlow(db_url)
    app.register(flow)
    try:
        app.ensure_flow(flow)
        assert stored_limits(db_url, "ensured") == [("", 3, None, None, False, None, 2, True)]
    finally:
        flow.bind(None)
        app.close()


# -- rate buckets: pruned once full again ------------------------------------------------------


def test_prune_deletes_the_buckets_full_again_and_a_deleted_one_admits_as_a_full_one(
    db_url: str,
) -> None:
    client = Client(db_url)
    try:
        client.upsert_flow(
            "per_key", steps=[{"slug": "pay"}], rate_limit="2/h", concurrency_key="customer"
        )
        for customer in ("acme", "bolt", "bolt"):
            client.start_flow("per_key", {"customer": customer})
        with connect(db_url) as conn:
            read, claimed = claim(conn, "per_key", register_worker(conn, "per_key"))
            assert len(claimed) == 3
            buckets = conn.execute(test_query("limits_buckets"), {"flow_slug": "per_key"})
            assert buckets.fetchall() == [("acme", 1.0), ("bolt", 0.0)]
            # 31 minutes on: acme's one missing token is back (full), bolt has one of two.
            for key in ("acme", "bolt"):
                conn.execute(
                    test_query("limits_age_bucket"),
                    {"flow_slug": "per_key", "key": key, "seconds": 31 * 60},
                )
        assert client.prune(older_than="7d").rate_buckets == 1
        with connect(db_url) as conn:
            left = conn.execute(test_query("limits_buckets"), {"flow_slug": "per_key"})
            assert [key for key, _ in left.fetchall()] == ["bolt"]
        # acme's missing bucket admits two, as a full one; bolt's kept bucket one.
        runs = {
            client.start_flow("per_key", {"customer": c}): c
            for c in ("acme", "acme", "acme", "bolt", "bolt")
        }
        with connect(db_url) as conn:
            read, claimed = claim(conn, "per_key", register_worker(conn, "per_key"))
            claimed_runs = run_of(conn, "per_key", claimed)
        assert len(read) == 5
        assert sorted(runs[claimed_runs[m]] for m in claimed) == ["acme", "acme", "bolt"]

        # A bucket whose scope has no rate limit any more goes too.
        with connect(db_url) as conn:
            write_limits(conn, "per_key", {})
        assert client.prune(older_than="7d").rate_buckets == 2
    finally:
        client.close()


def test_a_claim_waiting_on_a_bucket_being_pruned_admits_from_a_full_one_and_debits_it(
    db_url: str,
) -> None:
    client = Client(db_url)
    try:
        client.upsert_flow("waits", steps=[{"slug": "pay"}], rate_limit="2/h")
        client.start_flow("waits", {})
        with connect(db_url) as conn:
            assert len(claim(conn, "waits", register_worker(conn, "waits"))[1]) == 1
            conn.execute(
                test_query("limits_age_bucket"), {"flow_slug": "waits", "key": "", "seconds": 7200}
            )
        client.start_flow("waits", {})
        claimed: list[list[int]] = []
        with connect(db_url, autocommit=False) as pruning:
            row = pruning.execute(query("control.prune_rate_buckets"), {"batch_size": 10})
            assert row.fetchone() == (1,)  # deleted, not committed yet: the row stays locked

            def claimer() -> None:
                with connect(db_url) as conn:
                    claimed.append(claim(conn, "waits", register_worker(conn, "waits"))[1])

            thread = threading.Thread(target=claimer)
            thread.start()
            thread.join(1.0)
            assert thread.is_alive()  # the claim waits for the pruning transaction
            pruning.commit()
        thread.join(30)
        assert [len(c) for c in claimed] == [1]
        with connect(db_url) as conn:
            buckets = conn.execute(test_query("limits_buckets"), {"flow_slug": "waits"})
            ((key, tokens),) = buckets.fetchall()
        assert key == "" and 0.99 < tokens < 1.01  # recreated full (2), debited by the claim
    finally:
        client.close()


def test_pruning_buckets_while_threads_claim_never_admits_beyond_a_key_s_tokens(
    db_url: str,
) -> None:
    """A flow rate limit of 3 an hour per customer, and 2 slots for the step: claims keep
    creating full buckets (tasks deferred for want of a slot) that the pruner deletes while
    other claims admit. Every customer is admitted exactly its 3 tokens, never more."""
    client = Client(db_url)
    customers = [f"c{i:02}" for i in range(12)]
    client.upsert_flow(
        "hammered",
        steps=[{"slug": "pay", "max_concurrency": 2}],
        rate_limit="3/h",
        concurrency_key="customer",
    )
    customer_of = {
        str(client.start_flow("hammered", {"customer": c})): c for c in customers for _ in range(5)
    }
    client.close()
    admitted: list[str] = []
    pruned: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def claimer() -> None:
        try:
            with connect(db_url) as conn:
                worker_id = register_worker(conn, "hammered")
                while not stop.is_set():
                    read = [
                        r[0]
                        for r in conn.execute(
                            query("worker.read_messages"),
                            {"queue_name": "hammered", "vt": 30, "qty": 4},
                        ).fetchall()
                    ]
                    if not read:
                        time.sleep(0.05)
                        continue
                    rows = conn.execute(
                        query("worker.claim_tasks"),
                        {
                            "flow_slug": "hammered",
                            "msg_ids": read,
                            "worker_id": worker_id,
                            "read_visibility": 30,
                        },
                    ).fetchall()
                    for run_id, step_slug, task_index, *_ in rows:
                        with lock:
                            admitted.append(customer_of[str(run_id)])
                        conn.execute(
                            test_query("sqlworker_complete"),
                            {
                                "run_id": run_id,
                                "step_slug": step_slug,
                                "task_index": task_index,
                                "output": Jsonb(1),
                            },
                        )
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    def pruner() -> None:
        try:
            with connect(db_url) as conn:
                while not stop.is_set():
                    row = conn.execute(
                        query("control.prune_rate_buckets"), {"batch_size": 5}
                    ).fetchone()
                    pruned.append(row[0] if row else 0)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    threads += [threading.Thread(target=pruner) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 90
    try:
        while len(admitted) < 3 * len(customers) and time.monotonic() < deadline and not failures:
            time.sleep(0.1)
        time.sleep(1.5)  # a claim over the tokens would have been admitted by now
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not failures, failures
    counts = {c: admitted.count(c) for c in customers}
    assert counts == {c: 3 for c in customers}
    assert sum(pruned) > 0  # the pruner did delete buckets meanwhile
