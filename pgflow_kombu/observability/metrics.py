"""Prometheus metrics (the ``[metrics]`` extra: ``pip install 'pgflow-kombu[metrics]'``).

Two sources, one registry:

* :class:`WorkerMetrics` counts what the workers of this process do, through their hooks:
  tasks started/completed/retried/failed and runs completed/failed by flow (and step), task
  durations, claim and report batch sizes, database reconnects.
* :class:`DatabaseCollector` reads the database when scraped (one cheap query each): visible
  messages and the age of the oldest visible one per flow queue, live workers per queue. It
  sees every flow and worker of the database, whoever runs them.

``pgflow-kombu worker --metrics-port 9108`` serves both on ``/metrics``. To serve the database
figures elsewhere (a dashboard's ``/metrics``), use :func:`database_registry` with
:func:`make_wsgi_app` / :func:`make_asgi_app`, or :func:`render`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    make_asgi_app,
    make_wsgi_app,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.queries import query
from pgflow_kombu.observability.hooks import (
    ClaimBatch,
    Hooks,
    ReportBatch,
    RunCompleted,
    RunFailed,
    TaskFailed,
    TaskRetried,
    TaskStarted,
    TaskSucceeded,
)
from pgflow_kombu.settings import WORKER_DEFAULTS

__all__ = [
    "CONTENT_TYPE_LATEST",
    "DatabaseCollector",
    "WorkerMetrics",
    "database_registry",
    "make_asgi_app",
    "make_wsgi_app",
    "render",
    "serve",
]

log = logging.getLogger("pgflow_kombu.metrics")

PREFIX = "pgflow_kombu"
# Handler durations: from a millisecond to ten minutes.
DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    600,
)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
# Seconds: a worker that heartbeated within this is live (as the health check).
LIVE_AFTER = WORKER_DEFAULTS.stalled_after


class WorkerMetrics:
    """Counters and histograms of this process's workers; :meth:`subscribe` each worker's (or
    app's) hooks. With ``url``, the registry also gets a :class:`DatabaseCollector`."""

    def __init__(self, registry: CollectorRegistry | None = None, *, url: str | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        step = ["flow", "step"]
        self.started = Counter(
            f"{PREFIX}_tasks_started", "Task attempts started.", step, registry=r
        )
        self.completed = Counter(
            f"{PREFIX}_tasks_completed", "Task attempts completed.", step, registry=r
        )
        self.retried = Counter(
            f"{PREFIX}_tasks_retried",
            "Task attempts failed with attempts left (the task is queued again).",
            step,
            registry=r,
        )
        self.failed = Counter(
            f"{PREFIX}_tasks_failed",
            "Task attempts failed with no attempt left (the run failed).",
            step,
            registry=r,
        )
        self.duration = Histogram(
            f"{PREFIX}_task_duration_seconds",
            "Handler run time of task attempts, by outcome (completed, retried, failed).",
            [*step, "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.runs_completed = Counter(
            f"{PREFIX}_runs_completed",
            "Runs completed by this process's reports.",
            ["flow"],
            registry=r,
        )
        self.runs_failed = Counter(
            f"{PREFIX}_runs_failed", "Runs failed by this process's reports.", ["flow"], registry=r
        )
        self.claim_batch = Histogram(
            f"{PREFIX}_claim_batch_size",
            "Tasks started by one claim statement.",
            ["flow"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.report_batch = Histogram(
            f"{PREFIX}_report_batch_size",
            "Outcomes settled by one report transaction.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        r.register(_ReconnectsCollector())
        if url is not None:
            r.register(DatabaseCollector(url))

    def subscribe(self, hooks: Hooks) -> None:
        hooks.on("task_started", self._started)
        hooks.on("task_succeeded", self._succeeded)
        hooks.on("task_retried", self._retried)
        hooks.on("task_failed", self._failed)
        hooks.on("run_completed", self._run_completed)
        hooks.on("run_failed", self._run_failed)
        hooks.on("tasks_claimed", self._claimed)
        hooks.on("outcomes_reported", self._reported)

    def _started(self, e: TaskStarted) -> None:
        self.started.labels(e.flow_slug, e.step_slug).inc()

    def _succeeded(self, e: TaskSucceeded) -> None:
        self.completed.labels(e.flow_slug, e.step_slug).inc()
        self.duration.labels(e.flow_slug, e.step_slug, "completed").observe(e.duration)

    def _retried(self, e: TaskRetried) -> None:
        self.retried.labels(e.flow_slug, e.step_slug).inc()
        self.duration.labels(e.flow_slug, e.step_slug, "retried").observe(e.duration)

    def _failed(self, e: TaskFailed) -> None:
        self.failed.labels(e.flow_slug, e.step_slug).inc()
        self.duration.labels(e.flow_slug, e.step_slug, "failed").observe(e.duration)

    def _run_completed(self, e: RunCompleted) -> None:
        self.runs_completed.labels(e.flow_slug).inc()

    def _run_failed(self, e: RunFailed) -> None:
        self.runs_failed.labels(e.flow_slug).inc()

    def _claimed(self, e: ClaimBatch) -> None:
        self.claim_batch.labels(e.flow_slug).observe(e.count)

    def _reported(self, e: ReportBatch) -> None:
        self.report_batch.observe(e.count)


class _ReconnectsCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        from pgflow_kombu.worker.link import Link

        yield CounterMetricFamily(
            f"{PREFIX}_db_reconnects",
            "Worker database connections opened again after one was lost (this process).",
            value=Link.reconnects,
        )


class DatabaseCollector(Collector):
    """Figures read from the database at each scrape, over one connection kept between scrapes.

    ``pgflow_kombu_database_up`` is 0 when the last scrape could not read them (the other
    database figures are then left out rather than reported stale).
    """

    def __init__(self, url: str, *, live_after: float = LIVE_AFTER) -> None:
        self.url = url
        self.live_after = live_after
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _read(self) -> tuple[list[Any], list[Any]]:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self.url, application_name="pgflow-kombu-metrics")
                depths = self._conn.execute(query("observability.queue_depths")).fetchall()
                live = self._conn.execute(
                    query("observability.live_workers"), {"stale_after": self.live_after}
                ).fetchall()
                return depths, live
            except Exception:
                self._drop()
                raise

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            f"{PREFIX}_database_up", "Whether the last scrape could read the database."
        )
        try:
            depths, live = self._read()
        except Exception as exc:
            log.warning("metrics: cannot read the database: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Messages visible now in the flow's queue.", labels=["flow"]
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_message_age_seconds",
            "Age of the oldest visible message in the flow's queue (0 when none is visible).",
            labels=["flow"],
        )
        for flow_slug, visible, oldest in depths:
            depth.add_metric([flow_slug], visible)
            age.add_metric([flow_slug], oldest or 0.0)
        workers = GaugeMetricFamily(
            f"{PREFIX}_live_workers",
            f"Workers of the queue heartbeating within {self.live_after:g} s, not deprecated.",
            labels=["flow"],
        )
        for queue_name, count in live:
            workers.add_metric([queue_name], count)
        yield depth
        yield age
        yield workers


def database_registry(url: str) -> CollectorRegistry:
    """A registry holding the database figures only (what a dashboard's ``/metrics`` serves)."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(url))
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus's text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
    """Serve ``/metrics`` from a background thread; returns a function that stops it."""
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
