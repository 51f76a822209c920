"""Observability: hooks the worker calls, and the metrics and tracing that subscribe to them.

:mod:`.hooks` is a leaf (the worker imports it); :mod:`.metrics` needs the ``[metrics]`` extra
(``prometheus-client``) and :mod:`.tracing` the ``[otel]`` extra (OpenTelemetry); both are
imported only when used.
"""

from __future__ import annotations

from pgflow_kombu.observability.hooks import (
    EVENTS,
    ClaimBatch,
    Hooks,
    ReportBatch,
    RunCompleted,
    RunEvent,
    RunFailed,
    TaskEvent,
    TaskFailed,
    TaskRetried,
    TaskStarted,
    TaskSucceeded,
)

__all__ = [
    "EVENTS",
    "ClaimBatch",
    "Hooks",
    "ReportBatch",
    "RunCompleted",
    "RunEvent",
    "RunFailed",
    "TaskEvent",
    "TaskFailed",
    "TaskRetried",
    "TaskStarted",
    "TaskSucceeded",
]
