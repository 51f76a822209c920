"""The span that starts a run, and the trace context it leaves with the run.

Used by the client's ``start_flow``. Without OpenTelemetry installed it costs one cached check.
With it, each start is a ``start <flow>`` span (kind producer) under the caller's current span;
when that span is valid (an SDK is configured, or a remote parent is current), its W3C trace
context is written with the run (``pgflow_kombu.run_trace_context``) in the ``start_flow``
statement itself, so workers can put their task spans in the caller's trace.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["RunSpan", "run_start_span"]


@functools.cache
def _otel() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


class RunSpan:
    """The current start span: ``params`` (traceparent, tracestate) for the start statement."""

    def __init__(self, span: Any, params: dict[str, str | None]) -> None:
        self.span = span
        self.params = params

    def started(self, run_id: object) -> None:
        self.span.set_attribute("pgflow.run_id", str(run_id))


@contextmanager
def run_start_span(flow_slug: str, runs: int = 1) -> Iterator[RunSpan | None]:
    """The ``start <flow>`` span of one run, or of ``runs`` runs started together."""
    trace = _otel()
    if trace is None:
        yield None
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    tracer = trace.get_tracer("pgflow_kombu")
    with tracer.start_as_current_span(
        f"start {flow_slug}",
        kind=trace.SpanKind.PRODUCER,
        attributes={"pgflow.flow_slug": flow_slug, "pgflow.runs": runs},
    ) as span:
        if not span.get_span_context().is_valid:
            yield None
            return
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        yield RunSpan(
            span,
            {"traceparent": carrier["traceparent"], "tracestate": carrier.get("tracestate")},
        )
