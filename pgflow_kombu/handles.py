"""A handle on one run: what ``task.delay()`` and ``flow.start()`` return.

A handle reads its run through a :class:`RunSource`: the client (the database) for real runs,
a :class:`FinishedRun` for the runs of an eager app, which finished before the handle was made.
Both kinds are the one :class:`RunHandle` type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from pgflow_kombu.client.inputs import check_timeout
from pgflow_kombu.errors import RunFailed, RunNotFound

if TYPE_CHECKING:
    from pgflow_kombu.types import Run, RunEvent, RunEventType

__all__ = ["FinishedRun", "RunHandle", "RunSource"]


class RunSource(Protocol):
    """Where a handle reads its run (implemented by :class:`~pgflow_kombu.client.Client`)."""

    def get_run_with_states(self, run_id: UUID | str) -> Run: ...

    def wait(
        self, run_id: UUID | str, *, timeout: float | None = ..., raise_on_failure: bool = ...
    ) -> Run: ...

    def events(self, run_id: UUID | str, *, timeout: float | None = ...) -> Iterator[RunEvent]: ...

    def aevents(
        self, run_id: UUID | str, *, timeout: float | None = ...
    ) -> AsyncIterator[RunEvent]: ...


class RunHandle:
    """The id of a run plus shortcuts to read and wait for it (each call queries the database).

    ``str(handle)`` is the run id, so a handle can be stored or logged like one. A handle of a
    task started through the task (``task.delay``, ``task.apply_async``) has ``result_key``,
    the task's name: :meth:`get` returns the task function's value, as Celery's does, while
    :attr:`output` and :meth:`wait` keep the run output ``{name: value}``.
    """

    __slots__ = ("_client", "_finished", "flow_slug", "result_key", "run_id")

    def __init__(
        self, client: RunSource, run_id: UUID, flow_slug: str, *, result_key: str | None = None
    ) -> None:
        self._client = client
        self.run_id = run_id
        self.flow_slug = flow_slug
        self.result_key = result_key
        self._finished: Run | None = None

    def __repr__(self) -> str:
        return f"<RunHandle {self.flow_slug} {self.run_id}>"

    def __str__(self) -> str:
        return str(self.run_id)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RunHandle):
            return self.run_id == other.run_id
        if isinstance(other, UUID):
            return self.run_id == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.run_id)

    def refresh(self) -> Run:
        """The run with its step states and tasks, as the database holds it now."""
        if self._finished is not None:
            return self._finished
        run = self._client.get_run_with_states(self.run_id)
        if run.finished:
            self._finished = run
        return run

    @property
    def status(self) -> str:
        """``started``, ``completed`` or ``failed``."""
        return self.refresh().status

    @property
    def output(self) -> Any:
        """The run's output (``None`` until it completes)."""
        return self.refresh().output

    def wait(self, timeout: float | None = 60.0, *, raise_on_failure: bool = True) -> Run:
        """Block until the run finishes (woken by NOTIFY); see :meth:`Client.wait`."""
        run = self._client.wait(self.run_id, timeout=timeout, raise_on_failure=raise_on_failure)
        self._finished = run
        return run

    def get(self, timeout: float | None = 60.0) -> Any:
        """Wait and return the output, Celery style: raises RunFailed / RunTimeout.

        For a task's handle (see the class doc) the task's return value (as JSON)."""
        output = self.wait(timeout).output
        if self.result_key is not None and isinstance(output, dict):
            return output.get(self.result_key)
        return output

    def events(self, timeout: float | None = None) -> Iterator[RunEvent]:
        """The run's events (``run:started``, ``step:completed``...) as they happen, those that
        already happened first; ends after the run finishes. See :meth:`Client.events`."""
        return self._client.events(self.run_id, timeout=timeout)

    def aevents(self, timeout: float | None = None) -> AsyncIterator[RunEvent]:
        """:meth:`events` as an async iterator (``async for event in handle.aevents()``)."""
        return self._client.aevents(self.run_id, timeout=timeout)


class FinishedRun:
    """The :class:`RunSource` of a run that finished in this process (an eager app's run).

    Waiting returns at once, or raises :class:`RunFailed` as the client does (with the failing
    handler's exception as ``__cause__``); the events are the run's, replayed in step order.
    """

    def __init__(self, run: Run, error: BaseException | None = None) -> None:
        self.run = run
        self.error = error

    def _check(self, run_id: UUID | str) -> Run:
        if str(run_id) != str(self.run.run_id):
            raise RunNotFound(f"no run with id {run_id}")
        return self.run

    def get_run_with_states(self, run_id: UUID | str) -> Run:
        return self._check(run_id)

    def wait(
        self, run_id: UUID | str, *, timeout: float | None = 60.0, raise_on_failure: bool = True
    ) -> Run:
        check_timeout(timeout)
        run = self._check(run_id)
        if run.status == "failed" and raise_on_failure:
            raise RunFailed(
                f"run {run.run_id} of flow {run.flow_slug!r} failed: {run.error_message}", run=run
            ) from self.error
        return run

    def events(self, run_id: UUID | str, *, timeout: float | None = None) -> Iterator[RunEvent]:
        check_timeout(timeout)
        return iter(_replay(self._check(run_id)))

    async def aevents(
        self, run_id: UUID | str, *, timeout: float | None = None
    ) -> AsyncIterator[RunEvent]:
        for event in self.events(run_id, timeout=timeout):
            yield event


_STEP_EVENTS: dict[str, RunEventType] = {
    "completed": "step:completed",
    "failed": "step:failed",
    "skipped": "step:skipped",
}
_RUN_EVENTS: dict[str, RunEventType] = {
    "completed": "run:completed",
    "failed": "run:failed",
    "cancelled": "run:cancelled",
}


def _replay(run: Run) -> list[RunEvent]:
    from pgflow_kombu.types import RunEvent

    events = [
        RunEvent(event_type="run:started", run_id=run.run_id, status="started", at=run.started_at)
    ]
    for state in run.step_states:
        if state.status in _STEP_EVENTS:
            events.append(
                RunEvent(
                    event_type=_STEP_EVENTS[state.status],
                    run_id=run.run_id,
                    step_slug=state.step_slug,
                    status=state.status,
                    error_message=state.error_message,
                    skip_reason=state.skip_reason,
                    at=state.completed_at or state.failed_at,
                )
            )
    events.append(
        RunEvent(
            event_type=_RUN_EVENTS[run.status],
            run_id=run.run_id,
            status=run.status,
            output=run.output,
            error_message=run.error_message,
            at=run.completed_at or run.failed_at,
        )
    )
    return events
