"""The one exception hierarchy of pgflow-kombu.

Everything the package raises on purpose derives from :class:`PgFlowError`; psycopg errors are
translated at the ``db/`` boundary so callers never need to import psycopg to handle failures.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConditionNotMet",
    "ConfigurationError",
    "ConnectionFailed",
    "ConstraintViolation",
    "DataRejected",
    "DatabaseError",
    "Diagnostics",
    "FlowDefinitionError",
    "FlowInputError",
    "FlowMismatch",
    "FlowNotFound",
    "MigrationError",
    "NotBoundError",
    "PermissionDenied",
    "PgFlowError",
    "QueryNotFound",
    "Reject",
    "RunCancelled",
    "RunFailed",
    "RunNotFound",
    "RunNotRetryable",
    "RunTimeout",
    "ScheduleNotFound",
    "SchemaMissing",
    "StepError",
    "StepFailed",
    "StepInputError",
    "StepOutputError",
    "UnexpectedReply",
    "WorkerNotFound",
]


class PgFlowError(Exception):
    """Base class of every error raised by pgflow-kombu."""


class ConfigurationError(PgFlowError):
    """Settings are missing or malformed (a bad URL, an unknown option)."""


@dataclass(frozen=True)
class Diagnostics:
    """What PostgreSQL said about an error, field by field (``None`` where it said nothing)."""

    message_primary: str | None = None
    message_detail: str | None = None
    message_hint: str | None = None
    schema_name: str | None = None
    table_name: str | None = None
    column_name: str | None = None
    datatype_name: str | None = None
    constraint_name: str | None = None
    context: str | None = None


class DatabaseError(PgFlowError):
    """The database refused or failed an operation.

    ``sqlstate`` is PostgreSQL's five-character error code (``None`` for failures on the client
    side, such as a lost connection) and ``diag`` its diagnostics: match on these, not on the text.
    """

    def __init__(
        self, message: str, *, sqlstate: str | None = None, diag: Diagnostics | None = None
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.diag = diag if diag is not None else Diagnostics()

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments: pickle (process pools) must rebuild through them.
        return (_rebuild_database_error, (type(self), str(self), self.sqlstate, self.diag))


def _rebuild_database_error(
    kind: type[DatabaseError], message: str, sqlstate: str | None, diag: Diagnostics
) -> DatabaseError:
    return kind(message, sqlstate=sqlstate, diag=diag)


class ConnectionFailed(DatabaseError):
    """The server could not be reached, refused the connection, or the connection was lost."""


class PermissionDenied(DatabaseError):
    """The database user lacks a privilege the operation needs."""


class SchemaMissing(DatabaseError):
    """The database lacks pgflow's or pgflow-kombu's tables or functions (or an older version of
    them): ``pgflow-kombu db upgrade`` installs them."""


class ConstraintViolation(DatabaseError):
    """A statement broke an integrity constraint (SQLSTATE class 23): ``diag.constraint_name``
    names it."""


class DataRejected(DatabaseError):
    """PostgreSQL refused a value (SQLSTATE class 22): out of its type's range, not valid JSON
    for ``jsonb``, a malformed UUID..."""


class MigrationError(DatabaseError):
    """The schema could not be brought up to date, or is in a state we do not recognise."""


class UnexpectedReply(PgFlowError):
    """The database answered with a value this version of the package does not know: the schema
    and the package differ in version (``pgflow-kombu db upgrade`` brings the schema up)."""


class QueryNotFound(PgFlowError):
    """A named query was asked for that no .sql file defines."""


class FlowNotFound(PgFlowError):
    """The database holds no flow with that slug (``flow_exists`` is False)."""


class FlowMismatch(PgFlowError):
    """The flow the code defines differs from the one the database holds under the same slug."""

    def __init__(self, message: str, *, flow_slug: str, differences: list[str]) -> None:
        super().__init__(message)
        self.flow_slug = flow_slug
        self.differences = differences


class RunNotFound(PgFlowError):
    """No run has that id."""


class ScheduleNotFound(PgFlowError):
    """No schedule has that name."""


class WorkerNotFound(PgFlowError):
    """No worker of this app serves that flow (``stop_worker(flow)``; the seeds' ``:not_found``)."""


class RunTimeout(PgFlowError):
    """A run did not finish within the time the caller was willing to wait."""

    def __init__(self, message: str, *, run_id: object) -> None:
        super().__init__(message)
        self.run_id = run_id


class RunFailed(PgFlowError):
    """A waited-for run ended in ``failed``; ``run`` holds it with its step states."""

    def __init__(self, message: str, *, run: object) -> None:
        super().__init__(message)
        self.run = run


class RunCancelled(RunFailed):
    """A waited-for run was cancelled (pgflow's row says failed; ``run.status`` is cancelled)."""


class RunNotRetryable(PgFlowError):
    """``retry_run`` on a run that is not failed or cancelled (it is running or completed)."""


class FlowDefinitionError(PgFlowError):
    """A flow, step or task definition is invalid (bad slug, unknown dependency, bad option...).

    Raised when the definition is built, never at run time. ``flow_slug`` and ``step_slug`` name
    the offending definition when known.
    """

    def __init__(self, message: str, *, flow_slug: str | None = None, step_slug: str | None = None):
        super().__init__(message)
        self.flow_slug = flow_slug
        self.step_slug = step_slug


class StepError(PgFlowError):
    """Base of the errors raised while running one step's handler; names the flow and step."""

    def __init__(self, message: str, *, flow_slug: str, step_slug: str):
        super().__init__(message)
        self.flow_slug = flow_slug
        self.step_slug = step_slug


class StepInputError(StepError):
    """A step's input does not fit its handler's parameters or their type hints.

    ``field`` is the parameter (and, for nested data, the dotted path inside it) at fault.
    """

    def __init__(
        self, message: str, *, flow_slug: str, step_slug: str, field: str | None = None
    ) -> None:
        super().__init__(message, flow_slug=flow_slug, step_slug=step_slug)
        self.field = field


class StepOutputError(StepError):
    """A handler returned a value that fails its return type hint or is not JSON."""

    def __init__(
        self, message: str, *, flow_slug: str, step_slug: str, field: str | None = None
    ) -> None:
        super().__init__(message, flow_slug=flow_slug, step_slug=step_slug)
        self.field = field


class StepFailed(StepError):
    """A step's handler raised during eager (in-process) execution; the original is ``__cause__``."""

    def __init__(
        self, message: str, *, flow_slug: str, step_slug: str, task_index: int, attempts: int
    ) -> None:
        super().__init__(message, flow_slug=flow_slug, step_slug=step_slug)
        self.task_index = task_index
        self.attempts = attempts


class Reject(PgFlowError):
    """Raised by a handler to fail its task for good: no retry, whatever attempts remain (the
    step and the run fail as on a last attempt). Subclass it for errors that retrying cannot fix.
    A step input that fails its handler's validation (:class:`StepInputError`) is treated alike.
    """


class ConditionNotMet(StepFailed):
    """In an eager run, a step's condition did not hold and its ``when_unmet`` is ``"fail"``
    (a worker's run fails with the step's error ``Condition not met``)."""


class FlowInputError(PgFlowError):
    """A run input (or start option) is unusable: not JSON, not an array for a root map step,
    arguments that do not fit a task, a negative delay."""


class NotBoundError(ConfigurationError):
    """A flow or task was started but is not registered with an app that can dispatch it."""
