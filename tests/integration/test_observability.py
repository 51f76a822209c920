"""Hooks, Prometheus metrics and OpenTelemetry spans of a worker running real flows."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pgflow_kombu.client import Client
from pgflow_kombu.db.connect import connect
from pgflow_kombu.errors import RunFailed as RunFailedError
from pgflow_kombu.flows import Flow
from pgflow_kombu.observability import (
    Hooks,
    RunCompleted,
    RunFailed,
    TaskFailed,
    TaskRetried,
    TaskStarted,
    TaskSucceeded,
)
from pgflow_kombu.observability.metrics import WorkerMetrics, serve
from pgflow_kombu.observability.tracing import TaskTracer
from pgflow_kombu.worker import Worker
from pgflow_kombu.worker.link import Link
from tests.support.sql import test_query

doomed = Flow("obs_doomed", max_attempts=2, base_delay=0)


@doomed.step
def breaks(run: Any) -> None:
    raise RuntimeError("always broken")


idle = Flow("obs_idle")  # compiled but served by no worker: its messages wait in the queue


@idle.step
def never(run: Any) -> None:
    return None


chain_list = Flow("obs_list", base_delay=0)


@chain_list.step
def make(run: int) -> list[int]:
    return list(range(run))


@chain_list.map(over="make")
def double(item: int) -> int:
    return item * 2


FLOWS = {"obs_list": chain_list, "obs_doomed": doomed}


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    c = Client(db_url, poll_interval=0.2)
    yield c
    c.close()


@pytest.fixture
def start_worker(db_url: str) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(**options: Any) -> Worker:
        worker = Worker(FLOWS, db_url, heartbeat_interval=0.5, stalled_after=3.0, **options)
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(5)


def trace_contexts(url: str) -> list[tuple[str, str]]:
    with connect(url) as conn:
        return conn.execute(test_query("obs_trace_contexts")).fetchall()


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def run_both(client: Client) -> tuple[str, str]:
    """One run that completes (1 + 3 mapped tasks) and one that fails after a retry."""
    done = client.start_flow("obs_list", 3)
    client.wait(done, timeout=60)
    failed = client.start_flow("obs_doomed", {"x": 1})
    with pytest.raises(RunFailedError):
        client.wait(failed, timeout=60)
    return str(done), str(failed)


# -- hooks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["threads", "processes", "asyncio"])
def test_hooks_report_each_attempt_and_run_and_survive_a_raising_callback(
    client: Client,
    start_worker: Callable[..., Worker],
    caplog: pytest.LogCaptureFixture,
    pool: str,
) -> None:
    app_hooks = Hooks()
    seen: list[object] = []
    lock = threading.Lock()

    def record(event: object) -> None:
        with lock:
            seen.append(event)

    for name in ("task_started", "task_succeeded", "task_retried", "task_failed"):
        app_hooks.on(name, record)

    @app_hooks.on_run_completed
    def explode(event: RunCompleted) -> None:
        raise ValueError("a broken hook")

    worker = start_worker(hooks=app_hooks, pool=pool, concurrency=2)
    worker.hooks.on_run_completed(record)  # the worker's own, beside the app's
    worker.hooks.on_run_failed(record)

    with caplog.at_level(logging.ERROR, logger="pgflow_kombu.hooks"):
        done, failed = run_both(client)
        eventually(lambda: sum(isinstance(e, RunFailed) for e in seen) == 1)

    with lock:
        events = list(seen)
    started = [e for e in events if isinstance(e, TaskStarted)]
    succeeded = [e for e in events if isinstance(e, TaskSucceeded)]
    assert sorted((e.step_slug, e.task_index) for e in succeeded) == [
        ("double", 0),
        ("double", 1),
        ("double", 2),
        ("make", 0),
    ]
    assert all(e.run_id == done and e.attempt == 1 and e.duration >= 0 for e in succeeded)
    assert all(e.worker_id == worker.worker_ids[e.flow_slug] for e in succeeded)
    # Two attempts of the doomed step: the first is retried, the second fails the run.
    retried = [e for e in events if isinstance(e, TaskRetried)]
    final = [e for e in events if isinstance(e, TaskFailed)]
    assert [(e.run_id, e.step_slug, e.attempt, e.timed_out) for e in retried] == [
        (failed, "breaks", 1, False)
    ]
    assert [(e.run_id, e.attempt) for e in final] == [(failed, 2)]
    assert final[0].error == "RuntimeError: always broken"
    assert len(started) == 6
    assert sorted(e.attempt for e in started if e.run_id == failed) == [1, 2]
    # Run hooks: once each; the raising app hook did not stop the worker's own.
    assert [e for e in events if isinstance(e, RunCompleted)] == [RunCompleted("obs_list", done)]
    assert [e for e in events if isinstance(e, RunFailed)] == [
        RunFailed("obs_doomed", failed, "breaks", "RuntimeError: always broken")
    ]
    assert any("a broken hook" in (r.exc_text or "") for r in caplog.records) or any(
        r.exc_info and "a broken hook" in str(r.exc_info[1]) for r in caplog.records
    )
    eventually(lambda: worker.stats.completed == 4 and worker.stats.failed == 2)


def test_outcome_log_lines_carry_the_duration(
    client: Client, start_worker: Callable[..., Worker], caplog: pytest.LogCaptureFixture
) -> None:
    start_worker()
    with caplog.at_level(logging.INFO, logger="pgflow_kombu.worker"):
        run_both(client)
    lines = [r for r in caplog.records if getattr(r, "event", None) == "task_succeeded"]
    assert len(lines) == 4
    assert all(" succeeded in " in r.getMessage() for r in lines)
    assert all(isinstance(r.__dict__["duration"], float) for r in lines)
    failures = [r for r in caplog.records if getattr(r, "event", None) == "task_failed"]
    assert [r.__dict__["attempt"] for r in failures] == [1, 2]
    assert all(" failed in " in r.getMessage() for r in failures)


# -- metrics -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_scraped_over_http_after_runs(
    db_url: str, client: Client, start_worker: Callable[..., Worker]
) -> None:
    client.compile_flow(idle.shape())
    waiting = [client.start_flow("obs_idle", n) for n in range(2)]
    metrics = WorkerMetrics(url=db_url)
    worker = start_worker()
    metrics.subscribe(worker.hooks)
    port = free_port()
    stop = serve(metrics.registry, port)
    try:
        run_both(client)
        eventually(
            lambda: (
                scrape(port).get(("pgflow_kombu_runs_failed_total", (("flow", "obs_doomed"),))) == 1
            )
        )
        m = scrape(port)
    finally:
        stop()

    def value(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    assert value("pgflow_kombu_tasks_started_total", flow="obs_list", step="make") == 1
    assert value("pgflow_kombu_tasks_started_total", flow="obs_list", step="double") == 3
    assert value("pgflow_kombu_tasks_completed_total", flow="obs_list", step="double") == 3
    assert value("pgflow_kombu_tasks_completed_total", flow="obs_list", step="make") == 1
    assert value("pgflow_kombu_tasks_retried_total", flow="obs_doomed", step="breaks") == 1
    assert value("pgflow_kombu_tasks_failed_total", flow="obs_doomed", step="breaks") == 1
    assert value("pgflow_kombu_runs_completed_total", flow="obs_list") == 1
    assert value("pgflow_kombu_runs_failed_total", flow="obs_doomed") == 1
    assert (
        value(
            "pgflow_kombu_task_duration_seconds_count",
            flow="obs_list",
            step="double",
            outcome="completed",
        )
        == 3
    )
    assert (
        value(
            "pgflow_kombu_task_duration_seconds_bucket",
            flow="obs_doomed",
            step="breaks",
            outcome="failed",
            le="+Inf",
        )
        == 1
    )
    # Claims: 5 attempts started on obs_list/obs_doomed; reports: 6 outcomes settled.
    claimed = value("pgflow_kombu_claim_batch_size_sum", flow="obs_list") + value(
        "pgflow_kombu_claim_batch_size_sum", flow="obs_doomed"
    )
    assert claimed == 6
    assert value("pgflow_kombu_report_batch_size_sum") == 6
    assert value("pgflow_kombu_report_batch_size_count") >= 1
    # Read from the database at scrape time.
    assert value("pgflow_kombu_database_up") == 1
    assert value("pgflow_kombu_queue_depth", flow="obs_idle") == len(waiting)
    assert value("pgflow_kombu_queue_oldest_message_age_seconds", flow="obs_idle") > 0
    assert value("pgflow_kombu_queue_depth", flow="obs_list") == 0
    assert value("pgflow_kombu_queue_oldest_message_age_seconds", flow="obs_list") == 0
    assert value("pgflow_kombu_live_workers", flow="obs_list") == 1
    assert ("pgflow_kombu_live_workers", (("flow", "obs_idle"),)) not in m
    assert value("pgflow_kombu_db_reconnects_total") >= 0


# -- tracing -----------------------------------------------------------------------------------

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process: this module's, for the client's spans.
    if trace.get_tracer_provider() is not PROVIDER:
        trace.set_tracer_provider(PROVIDER)
    if trace.get_tracer_provider() is not PROVIDER:
        pytest.fail("another tracer provider was installed first in this process")
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def test_task_spans_join_the_trace_that_started_the_run(
    db_url: str,
    client: Client,
    start_worker: Callable[..., Worker],
    spans: InMemorySpanExporter,
) -> None:
    tracer = TaskTracer(db_url, tracer_provider=PROVIDER)
    worker = start_worker()
    tracer.subscribe(worker.hooks)
    caller = trace.get_tracer("tests")
    with caller.start_as_current_span("request"):
        done, failed = run_both(client)
    untraced = client.start_flow("obs_list", 1)  # no current span: the start span is the root
    client.wait(untraced, timeout=60)

    def finished() -> list[ReadableSpan]:
        return list(spans.get_finished_spans())

    eventually(lambda: sum(s.name.startswith("obs_") for s in finished()) == 6 + 2)
    tracer.close()
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in finished():
        by_name.setdefault(span.name, []).append(span)
    (request,) = by_name["request"]
    starts = {s.attributes["pgflow.run_id"]: s for s in by_name["start obs_list"]}  # type: ignore[index]
    starts.update({s.attributes["pgflow.run_id"]: s for s in by_name["start obs_doomed"]})  # type: ignore[index]
    start_done = starts[done]
    assert start_done.parent is not None and start_done.parent.span_id == request.context.span_id
    assert starts[str(untraced)].parent is None

    def task_spans(run_id: str) -> list[ReadableSpan]:
        return [
            s
            for s in finished()
            if s.name.startswith("obs_") and s.attributes["pgflow.run_id"] == run_id  # type: ignore[index]
        ]

    for run_id in (done, failed, str(untraced)):
        start = starts[run_id]
        for span in task_spans(run_id):
            assert span.parent is not None and span.parent.span_id == start.context.span_id
            assert span.context.trace_id == start.context.trace_id
    assert {s.context.trace_id for s in task_spans(done)} == {request.context.trace_id}
    assert sorted(
        (s.name, s.attributes["pgflow.task_index"], s.attributes["pgflow.attempt"])  # type: ignore[index]
        for s in task_spans(done)
    ) == [
        ("obs_list.double", 0, 1),
        ("obs_list.double", 1, 1),
        ("obs_list.double", 2, 1),
        ("obs_list.make", 0, 1),
    ]
    assert all(s.status.status_code is not StatusCode.ERROR for s in task_spans(done))
    doomed_spans = sorted(task_spans(failed), key=lambda s: s.attributes["pgflow.attempt"])  # type: ignore[arg-type,return-value,index]
    assert [(s.attributes["pgflow.outcome"], s.status.status_code) for s in doomed_spans] == [  # type: ignore[index]
        ("retried", StatusCode.ERROR),
        ("failed", StatusCode.ERROR),
    ]
    assert doomed_spans[1].status.description == "RuntimeError: always broken"
    assert all(
        s.end_time is not None and s.start_time is not None and s.end_time >= s.start_time
        for s in doomed_spans
    )
    # The context is kept in our schema, keyed by run id.
    kept = dict(trace_contexts(db_url))
    assert set(kept) == {done, failed, str(untraced)}
    trace_hex = format(request.context.trace_id, "032x")
    assert kept[done].startswith(f"00-{trace_hex}-")


# -- the command -------------------------------------------------------------------------------


def test_worker_command_serves_metrics_and_logs_outcomes_as_json(
    db_url: str, client: Client
) -> None:
    import json

    from tests.e2e_apps.harness import WorkerProcess

    port = free_port()
    args = ["--heartbeat-interval", "0.5", "--log-format", "json", "--flows", "linear"]
    env = {"PGFLOW_WORKER_METRICS_PORT": str(port)}  # the option's environment variable
    with WorkerProcess(db_url, *args, env=env) as worker:
        worker.wait_ready()
        run_id = client.start_flow("linear", {"n": 1})
        client.wait(run_id, timeout=60)
        key = ("pgflow_kombu_tasks_completed_total", (("flow", "linear"), ("step", "third")))
        eventually(lambda: scrape(port).get(key) == 1)
        m = scrape(port)
        assert worker.stop() == 0
    assert m[("pgflow_kombu_live_workers", (("flow", "linear"),))] == 1
    assert m[("pgflow_kombu_runs_completed_total", (("flow", "linear"),))] == 1
    lines = [json.loads(line) for line in worker.log.splitlines() if line.startswith("{")]
    banner = [e for e in lines if e.get("event") == "worker_banner"]
    assert banner[0]["metrics"] == f"http://127.0.0.1:{port}/metrics"
    succeeded = [e for e in lines if e.get("event") == "task_succeeded"]
    assert sorted(e["step_slug"] for e in succeeded) == ["first", "second", "third"]
    assert all(e["run_id"] == str(run_id) and e["duration"] >= 0 for e in succeeded)
    assert all(" succeeded in " in e["message"] for e in succeeded)


def test_app_hooks_reach_the_workers_the_app_starts(db_url: str) -> None:
    from pgflow_kombu import PgFlow

    app = PgFlow(database_url=db_url)
    app.register(chain_list)
    done: list[RunCompleted] = []
    app.hooks.on_run_completed(done.append)
    worker = app.start_worker(chain_list, heartbeat_interval=0.5)
    try:
        handle = app.start_flow(chain_list, 2)
        handle.wait(timeout=60)
        eventually(lambda: len(done) == 1)
    finally:
        app.stop_worker()
        app.close()
    assert done == [RunCompleted("obs_list", str(handle.run_id))]
    assert worker.hooks.parent is app.hooks


def test_trace_context_is_written_in_the_starting_transaction(
    db_url: str, client: Client, spans: InMemorySpanExporter
) -> None:
    client.compile_flow(idle.shape())
    caller = trace.get_tracer("tests")

    def kept() -> list[Any]:
        return trace_contexts(db_url)

    with caller.start_as_current_span("request"), connect(db_url, autocommit=False) as conn:
        client.start_flow("obs_idle", 1, connection=conn)
        conn.rollback()
        assert kept() == []
        with conn.transaction():
            client.start_flow("obs_idle", 2, connection=conn)
            assert kept() == []  # not committed yet: nothing visible outside
        many = client.start_many("obs_idle", [3, 4])
    assert len(kept()) == 3
    (batch,) = [s for s in spans.get_finished_spans() if s.attributes.get("pgflow.runs") == 2]  # type: ignore[union-attr]
    (parent,) = {traceparent for run_id, traceparent in kept() if run_id in map(str, many)}
    assert parent.startswith(f"00-{batch.context.trace_id:032x}-{batch.context.span_id:016x}-")


def test_database_registry_renders_queue_figures_for_a_dashboard(
    db_url: str, client: Client
) -> None:
    from pgflow_kombu.observability.metrics import database_registry, render

    client.compile_flow(idle.shape())
    client.start_flow("obs_idle", 1)
    body, content_type = render(database_registry(db_url))
    assert content_type.startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("pgflow_kombu_queue_depth", (("flow", "obs_idle"),))] == 1
    assert samples[("pgflow_kombu_database_up", ())] == 1
    assert not any(name.startswith("pgflow_kombu_tasks_") for name, _ in samples)


def test_reconnects_are_counted_when_the_worker_sessions_are_ended(
    db_url: str, client: Client, start_worker: Callable[..., Worker]
) -> None:
    metrics = WorkerMetrics()
    worker = start_worker()
    metrics.subscribe(worker.hooks)
    client.wait(client.start_flow("obs_list", 1), timeout=60)
    before = Link.reconnects
    with connect(db_url) as conn:
        row = conn.execute(test_query("obs_terminate_worker_sessions")).fetchone()
    assert row is not None and row[0] >= 3
    # The worker notices, connects again and goes on serving.
    client.wait(client.start_flow("obs_list", 2), timeout=60)
    eventually(lambda: Link.reconnects >= before + 2)
    body = generate_latest(metrics.registry).decode()
    (value,) = [
        s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "pgflow_kombu_db_reconnects_total"
    ]
    assert value == Link.reconnects


def test_worker_command_with_otel_puts_task_spans_in_the_callers_trace(
    db_url: str, client: Client, spans: InMemorySpanExporter, tmp_path: Any
) -> None:
    import json

    from tests.e2e_apps.harness import WorkerProcess

    exported = tmp_path / "spans.jsonl"
    args = ["--heartbeat-interval", "0.5", "--flows", "linear", "--otel"]
    env = {"PGFLOW_TEST_SPANS": str(exported)}
    with WorkerProcess(db_url, *args, app="tests.e2e_apps.traced:app", env=env) as worker:
        worker.wait_ready()
        with trace.get_tracer("tests").start_as_current_span("request"):
            run_id = client.start_flow("linear", {"n": 1})
        client.wait(run_id, timeout=60)

        def task_spans() -> list[dict[str, Any]]:
            if not exported.exists():
                return []
            return [json.loads(line) for line in exported.read_text().splitlines()]

        eventually(lambda: len(task_spans()) == 3)
        assert worker.stop() == 0
    assert "no OpenTelemetry tracer provider" not in worker.log
    (start,) = [s for s in spans.get_finished_spans() if s.name == "start linear"]
    assert sorted(s["name"] for s in task_spans()) == [
        "linear.first",
        "linear.second",
        "linear.third",
    ]
    for span in task_spans():
        assert span["trace_id"] == f"{start.context.trace_id:032x}"
        assert span["parent_id"] == f"{start.context.span_id:016x}"
        assert span["attributes"]["pgflow.run_id"] == str(run_id)
        assert span["status"] != "ERROR"


def test_a_traced_start_with_a_priority_keeps_both_its_trace_context_and_priority(
    db_url: str, client: Client, spans: InMemorySpanExporter
) -> None:
    client.compile_flow(idle.shape())
    with trace.get_tracer("tests").start_as_current_span("request"):
        one = client.start_flow("obs_idle", 1, priority=7)
        many = client.start_many("obs_idle", [2, 3], priority=-1, connection=None)
    assert {run_id for run_id, _ in trace_contexts(db_url)} == {str(one), *map(str, many)}
    with connect(db_url) as conn:
        controls = conn.execute(test_query("limits_run_controls")).fetchall()
    assert {(run_id, priority) for run_id, priority, _keys in controls} == {
        (str(one), 7),
        *((str(m), -1) for m in many),
    }
