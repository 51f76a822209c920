"""pgflow-kombu: background jobs and DAG workflows on PostgreSQL.

Flows and tasks compatible with pgflow 0.8.1 (TypeScript/Deno workers can share the database), a
worker riding a kombu transport on pgmq, and that transport for Celery (``pgflow://``).
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES

from pgflow_kombu.app import PgFlow
from pgflow_kombu.client import CORE_VERSION, Client
from pgflow_kombu.errors import (
    ConfigurationError,
    ConnectionFailed,
    DatabaseError,
    FlowDefinitionError,
    FlowInputError,
    FlowMismatch,
    FlowNotFound,
    PgFlowError,
    Reject,
    RunCancelled,
    RunFailed,
    RunNotFound,
    RunTimeout,
    ScheduleNotFound,
    StepError,
    WorkerNotFound,
)
from pgflow_kombu.flows import Flow, StepContext, Task
from pgflow_kombu.handles import RunHandle
from pgflow_kombu.types import Run, RunEvent, RunPage, StepState, StepTask

# kombu has no entry points for transports: importing the package makes "pgflow://" known.
TRANSPORT_ALIASES.setdefault("pgflow", "pgflow_kombu.transport:Transport")

__all__ = [
    "CORE_VERSION",
    "Client",
    "ConfigurationError",
    "ConnectionFailed",
    "DatabaseError",
    "Flow",
    "FlowDefinitionError",
    "FlowInputError",
    "FlowMismatch",
    "FlowNotFound",
    "PgFlow",
    "PgFlowError",
    "Reject",
    "Run",
    "RunCancelled",
    "RunEvent",
    "RunFailed",
    "RunHandle",
    "RunNotFound",
    "RunPage",
    "RunTimeout",
    "ScheduleNotFound",
    "StepContext",
    "StepError",
    "StepState",
    "StepTask",
    "Task",
    "WorkerNotFound",
]
