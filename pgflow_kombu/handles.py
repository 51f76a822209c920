"""A handle on one run: what ``task.delay()`` and ``flow.start()`` return."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from pgflow_kombu.client import Client
    from pgflow_kombu.types import Run, RunEvent


class RunHandle:
    """The id of a run plus shortcuts to read and wait for it (each call queries the database).

    ``str(handle)`` is the run id, so a handle can be stored or logged like one.
    """

    __slots__ = ("_client", "_finished", "flow_slug", "run_id")

    def __init__(self, client: Client, run_id: UUID, flow_slug: str) -> None:
        self._client = client
        self.run_id = run_id
        self.flow_slug = flow_slug
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
        """Wait and return the output, Celery style: raises RunFailed / RunTimeout."""
        return self.wait(timeout).output

    def events(self, timeout: float | None = None) -> Iterator[RunEvent]:
        """The run's events (``run:started``, ``step:completed``...) as they happen, those that
        already happened first; ends after the run finishes. See :meth:`Client.events`."""
        return self._client.events(self.run_id, timeout=timeout)

    def aevents(self, timeout: float | None = None) -> AsyncIterator[RunEvent]:
        """:meth:`events` as an async iterator (``async for event in handle.aevents()``)."""
        return self._client.aevents(self.run_id, timeout=timeout)
