"""OpenTelemetry spans of task attempts (the ``[otel]`` extra).

:class:`TaskTracer` subscribes to a worker's (or an app's) hooks and makes one span per task
attempt, named ``<flow>.<step>`` (kind consumer), with the attributes ``pgflow.flow_slug``,
``pgflow.step_slug``, ``pgflow.task_index``, ``pgflow.run_id``, ``pgflow.attempt``,
``pgflow.worker_id`` and ``pgflow.outcome`` (completed, retried, failed); a failed or retried
attempt has status ERROR with its error. The span's parent is the span that started the run
(see runspan.py), read once per run from ``pgflow_kombu.run_trace_context``; a run started with
no trace gives root spans.

Spans are made when the database has settled the attempt's report (the hooks' moment), with
the attempt's own start and end times: the handler's code does not run inside the span, so a
span the handler opens is not its child.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import psycopg
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.queries import query
from pgflow_kombu.observability.hooks import (
    Hooks,
    TaskEvent,
    TaskFailed,
    TaskRetried,
    TaskStarted,
    TaskSucceeded,
)

__all__ = ["TaskTracer"]

log = logging.getLogger("pgflow_kombu.tracing")

_CACHE = 4096  # runs whose trace context is remembered
_PENDING = 10_000  # start times kept for attempts not settled yet

AttemptKey = tuple[str, str, int, int]


def _key(e: TaskEvent) -> AttemptKey:
    return (e.run_id, e.step_slug, e.task_index, e.attempt)


class TaskTracer:
    def __init__(self, url: str, *, tracer_provider: TracerProvider | None = None) -> None:
        self.url = url
        self.tracer = trace.get_tracer("pgflow_kombu", tracer_provider=tracer_provider)
        # The API's default provider (none configured yet) records nothing.
        provider = tracer_provider or trace.get_tracer_provider()
        self.configured = not isinstance(
            provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        )
        self._propagator = TraceContextTextMapPropagator()
        self._contexts: OrderedDict[str, Context | None] = OrderedDict()
        self._starts: OrderedDict[AttemptKey, int] = OrderedDict()
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None

    def subscribe(self, hooks: Hooks) -> None:
        hooks.on("task_started", self._started)
        hooks.on("task_succeeded", self._succeeded)
        hooks.on("task_retried", self._retried)
        hooks.on("task_failed", self._failed)

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- hooks ---------------------------------------------------------------------------------

    def _started(self, e: TaskStarted) -> None:
        with self._lock:
            self._starts[_key(e)] = time.time_ns()
            if len(self._starts) > _PENDING:
                self._starts.popitem(last=False)

    def _succeeded(self, e: TaskSucceeded) -> None:
        self._span(e, e.duration, "completed", None)

    def _retried(self, e: TaskRetried) -> None:
        self._span(e, e.duration, "retried", e.error)

    def _failed(self, e: TaskFailed) -> None:
        self._span(e, e.duration, "failed", e.error)

    def _span(self, e: TaskEvent, duration: float, outcome: str, error: str | None) -> None:
        with self._lock:
            start = self._starts.pop(_key(e), None)
            parent = self._parent(e.run_id)
        length = int(duration * 1e9)
        if start is None:
            start = time.time_ns() - length
        span = self.tracer.start_span(
            f"{e.flow_slug}.{e.step_slug}",
            context=parent,
            kind=SpanKind.CONSUMER,
            start_time=start,
            attributes={
                "pgflow.flow_slug": e.flow_slug,
                "pgflow.step_slug": e.step_slug,
                "pgflow.task_index": e.task_index,
                "pgflow.run_id": e.run_id,
                "pgflow.attempt": e.attempt,
                "pgflow.worker_id": e.worker_id,
                "pgflow.outcome": outcome,
            },
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
            span.add_event("exception", {"exception.message": error})
        span.end(end_time=start + length)

    # -- the runs' trace contexts ----------------------------------------------------------------

    def _parent(self, run_id: str) -> Context | None:
        """The context the run was started in (cached); None when it has none or on error."""
        if run_id in self._contexts:
            self._contexts.move_to_end(run_id)
            return self._contexts[run_id]
        context: Context | None = None
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.url, application_name="pgflow-kombu-tracing")
            rows = self._conn.execute(
                query("observability.trace_contexts"), {"run_ids": [run_id]}
            ).fetchall()
        except Exception as exc:
            self._drop()
            log.warning("tracing: cannot read the trace context of run %s: %s", run_id, exc)
            return None
        for _run, traceparent, tracestate in rows:
            carrier = {"traceparent": traceparent}
            if tracestate:
                carrier["tracestate"] = tracestate
            context = self._propagator.extract(carrier)
        self._contexts[run_id] = context
        if len(self._contexts) > _CACHE:
            self._contexts.popitem(last=False)
        return context

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
