"""What the worker holds: a claimed task (one attempt), what became of it, and what the database
made of the report."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from pgflow_kombu.compat import StrEnum
from pgflow_kombu.errors import UnexpectedReply
from pgflow_kombu.flows.jsondata import Json

__all__ = ["ClaimedTask", "Outcome", "ReportResult", "error_text"]


@dataclass(slots=True, eq=False)
class ClaimedTask:
    """One attempt of one task, as ``pgflow_kombu.claim_tasks`` returned it.

    ``attempt`` is the task's ``attempts_count`` after the claim: reports name it so that the
    database applies them only to this attempt. ``timeout`` is the step's effective timeout in
    seconds. ``delivery`` is the message handle of the source it came from (acknowledged once the
    attempt is reported). ``cancel`` is set once its run is known to be cancelled (shared by the
    held tasks of one run; not sent to process children).
    """

    flow_slug: str
    run_id: str
    step_slug: str
    task_index: int
    msg_id: int
    input: Json
    attempt: int
    timeout: float
    worker_id: str
    delivery: Any = field(default=None, repr=False)
    cancel: threading.Event | None = field(default=None, repr=False)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    @property
    def label(self) -> str:
        """``flow/step[index]`` for logs."""
        return f"{self.flow_slug}/{self.step_slug}[{self.task_index}]"

    def identity(self) -> dict[str, Any]:
        """The fields that name this attempt in ``report_tasks`` / ``release_tasks``."""
        return {
            "run_id": self.run_id,
            "step_slug": self.step_slug,
            "task_index": self.task_index,
            "attempt": self.attempt,
            "worker_id": self.worker_id,
        }


@dataclass(slots=True, frozen=True)
class Outcome:
    """The end of an attempt: a JSON ``output``, or an ``error`` text for ``fail_task``.

    ``timed_out`` marks a failure decided by the worker's clock rather than by the handler;
    ``final`` one that is not retried (``pgflow_kombu.reject_task``).
    ``traceback`` is for the logs only (the database gets ``error``).
    """

    task: ClaimedTask
    output: Json = None
    error: str | None = None
    timed_out: bool = False
    traceback: str | None = None
    duration: float = 0.0
    final: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None

    def report(self) -> dict[str, Any]:
        """The JSON object ``pgflow_kombu.report_tasks`` takes for this outcome."""
        body = self.task.identity()
        if self.error is not None:
            body["error"] = self.error
            if self.final:
                body["final"] = True
        else:
            body["output"] = self.output
        return body


class ReportResult(StrEnum):
    """What ``pgflow_kombu.report_tasks`` did with one report (its body:
    sql/migrations/0092_set_based_reports.sql)."""

    COMPLETED = "completed"  # the output was stored
    FAILED = "failed"  # the error was stored (the task retries or fails)
    REJECTED = "rejected"  # complete_task raised: the attempt was failed with that error instead
    STALE = "stale"  # the attempt was no longer this worker's: nothing changed
    RETRY = "retry"  # a transient conflict undid this report: send it again

    @classmethod
    def parse(cls, value: object) -> ReportResult:
        """The member for a value the database returned; an unknown one is an error, never
        guessed at."""
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(repr(m.value) for m in cls)
            raise UnexpectedReply(
                f"report_tasks returned the outcome {value!r}, which this worker does not know "
                f"(it knows {known}): the schema and the package versions differ"
            ) from None


def error_text(exc: BaseException) -> str:
    """What ``fail_task`` stores for an exception: ``"<Type>: <message>"``."""
    message = str(exc)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name
