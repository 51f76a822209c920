"""The app's runs: start them (or run them eagerly), read them, wait for them, control them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from pgflow_kombu.app_base import AppBase
from pgflow_kombu.client import FlowRef, flow_slug_of
from pgflow_kombu.client.control import DEFAULT_PRUNE_BATCH
from pgflow_kombu.client.inputs import as_uuid, check_idempotency, check_idempotency_keys
from pgflow_kombu.errors import ConfigurationError, FlowNotFound
from pgflow_kombu.flows import Flow
from pgflow_kombu.flows.dispatch import check_schedule
from pgflow_kombu.flows.jsondata import Json
from pgflow_kombu.handles import FinishedRun, RunHandle
from pgflow_kombu.types import PruneResult, Run, RunEvent, RunPage

__all__ = ["RunsFacade"]


class RunsFacade(AppBase):
    """Starting, reading, waiting for and controlling runs through the app's client."""

    # -- runs ------------------------------------------------------------------------------------

    def start(
        self,
        flow: Flow,
        input: Json,
        *,
        delay_seconds: float | None = None,
        scheduled_at: datetime | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
    ) -> RunHandle:
        """The dispatcher flows call (``flow.start``, ``task.delay``); see :meth:`start_flow`.

        The handle of a task's run returns the task's value from ``get()`` (as Celery's does)."""
        handle = self.start_flow(
            flow,
            input,
            delay_seconds=delay_seconds,
            scheduled_at=scheduled_at,
            priority=priority,
            idempotency_key=idempotency_key,
        )
        if flow.slug in self._tasks:
            handle.result_key = flow.slug
        return handle

    def start_flow(
        self,
        flow: FlowRef,
        input: Any = None,
        *,
        run_id: UUID | str | None = None,
        connection: psycopg.Connection[Any] | None = None,
        delay_seconds: float | None = None,
        scheduled_at: datetime | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
    ) -> RunHandle:
        """Start a run; with ``connection=`` it commits or rolls back with the caller's transaction.

        ``priority`` (an integer, higher first; default: the flow's ``priority``) orders the
        claims of the flow's waiting tasks.

        A registered flow is checked against (or compiled into) the database first, and its input
        validated (JSON; an array for a root map). A slug of a flow only the database knows (e.g.
        defined by a TypeScript app) is started as is.

        ``idempotency_key``: a second start of the flow with the same key returns the first
        run's handle and starts nothing, also when both run at once (see
        :meth:`Client.start_flow`; an eager app keeps its keys in memory).

        An eager app runs the flow at once, retrying failed tasks up to their ``max_attempts``
        without waiting, and refuses what it cannot honour with :class:`ConfigurationError`:
        ``connection=`` (it has no database) and a delay or time in the future.
        """
        check_schedule(delay_seconds, scheduled_at)  # before anything is written
        slug = flow_slug_of(flow)
        registered = self._registered_or_eager(slug)
        keys = None
        if registered is not None:
            input = registered.prepare_input(input)
            if self.eager:
                return self._start_eager(
                    registered,
                    input,
                    run_id=run_id,
                    connection=connection,
                    delay_seconds=delay_seconds,
                    scheduled_at=scheduled_at,
                    idempotency_key=idempotency_key,
                    idempotency_ttl=idempotency_ttl,
                )
            self.ensure_flow(registered)
            keys = registered.run_keys(input)
        run = self.client.start_flow(
            slug,
            input,
            run_id=run_id,
            connection=connection,
            delay_seconds=delay_seconds,
            scheduled_at=scheduled_at,
            priority=priority,
            keys=keys,
            idempotency_key=idempotency_key,
            idempotency_ttl=idempotency_ttl,
        )
        return RunHandle(self.client, run, slug)

    def start_many(
        self,
        flow: FlowRef,
        inputs: Sequence[Any],
        *,
        connection: psycopg.Connection[Any] | None = None,
        priority: int | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
        idempotency_ttl: float | None = None,
    ) -> list[RunHandle]:
        """Start one run per input in one transaction: much faster than a loop for bulk work.

        ``idempotency_keys`` (one per input, ``None`` for none): an input whose key was already
        used for the flow, or earlier in the batch, gets that run's handle and starts nothing
        (see :meth:`Client.start_many`)."""
        slug = flow_slug_of(flow)
        registered = self._registered_or_eager(slug)
        inputs = list(inputs)
        dedup = check_idempotency_keys(idempotency_keys, len(inputs), idempotency_ttl)
        if registered is not None:
            inputs = [registered.prepare_input(i) for i in inputs]
            if self.eager:  # in turn, as the database would: a repeated key gives the first run
                keys = dedup or [None] * len(inputs)
                handles = [
                    self._start_eager(
                        registered,
                        data,
                        connection=connection,
                        idempotency_key=key,
                        idempotency_ttl=None if key is None else idempotency_ttl,
                    )
                    for data, key in zip(inputs, keys, strict=True)
                ]
            else:
                self.ensure_flow(registered)
        if registered is None or not self.eager:
            run_ids = self.client.start_many(
                registered if registered is not None else slug,
                inputs,
                connection=connection,
                priority=priority,
                idempotency_keys=dedup,
                idempotency_ttl=idempotency_ttl,
            )
            handles = [RunHandle(self.client, run_id, slug) for run_id in run_ids]
        if slug in self._tasks:  # a task's handles return its value from get(), as delay's do
            for handle in handles:
                handle.result_key = slug
        return handles

    def _registered_or_eager(self, slug: str) -> Flow | None:
        """The registered flow of ``slug``; an eager app can run nothing else."""
        registered = self._flows.get(slug)
        if registered is None and self.eager:
            raise FlowNotFound(
                f"no flow {slug!r} is registered with this app: an eager app runs only its own "
                "flows, in this process"
            )
        return registered

    def _start_eager(
        self,
        flow: Flow,
        input: Json,
        *,
        run_id: UUID | str | None = None,
        connection: psycopg.Connection[Any] | None = None,
        delay_seconds: float | None = None,
        scheduled_at: datetime | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
    ) -> RunHandle:
        if connection is not None:
            raise ConfigurationError(
                f"flow {flow.slug!r}: an eager app has no database, so a run cannot join the "
                "caller's transaction (connection=): leave it out in tests, or use an app with "
                "a database"
            )
        key = check_idempotency(idempotency_key, idempotency_ttl)
        run, error = self._eager_runs.start(
            flow,
            input,
            run_id=None if run_id is None else as_uuid(run_id),
            delay_seconds=delay_seconds,
            scheduled_at=scheduled_at,
            idempotency_key=key,
            idempotency_ttl=idempotency_ttl,
        )
        return RunHandle(FinishedRun(run, error), run.run_id, flow.slug)

    def start_flow_sync(
        self,
        flow: FlowRef,
        input: Any = None,
        *,
        timeout: float | None = 60.0,
        poll_interval: float | None = None,
    ) -> Run:
        """Start a run and wait for it: the completed Run, or RunFailed / RunTimeout.

        An eager app runs the flow in this thread and returns (or raises) at once.
        """
        handle = self.start_flow(flow, input)
        if self.eager:
            return handle.wait(timeout)
        return self.client.wait(handle.run_id, timeout=timeout, poll_interval=poll_interval)

    def enqueue(
        self,
        task: FlowRef,
        input: Any = None,
        *,
        delay_seconds: float | None = None,
        scheduled_at: datetime | None = None,
    ) -> RunHandle:
        """Enqueue a job (a task, i.e. a single-step flow) now or later; the delay is in the queue.

        ``delay_seconds``/``scheduled_at`` are checked as ``apply_async`` checks them (a
        :class:`FlowInputError` naming the value, before anything is written).
        """
        return self.start_flow(task, input, delay_seconds=delay_seconds, scheduled_at=scheduled_at)

    def enqueue_in(self, task: FlowRef, input: Any, delay_seconds: float) -> RunHandle:
        """Enqueue a job that becomes visible after ``delay_seconds`` (0 = now)."""
        check_schedule(delay_seconds, None, required=True)
        return self.enqueue(task, input, delay_seconds=delay_seconds)

    def enqueue_at(self, task: FlowRef, input: Any, scheduled_at: datetime) -> RunHandle:
        """Enqueue a job that becomes visible at ``scheduled_at`` (timezone-aware; past = now)."""
        check_schedule(None, scheduled_at, required=True)
        return self.enqueue(task, input, scheduled_at=scheduled_at)

    def get_run(self, run_id: UUID | str) -> Run:
        """A run without its steps (raises RunNotFound)."""
        return self.client.get_run(run_id)

    def get_run_with_states(self, run_id: UUID | str) -> Run:
        """A run with its step states and their tasks (raises RunNotFound)."""
        return self.client.get_run_with_states(run_id)

    def wait(self, run_id: UUID | str, *, timeout: float | None = 60.0) -> Run:
        """Wait for a run to finish (raises RunFailed / RunTimeout / RunNotFound)."""
        return self.client.wait(run_id, timeout=timeout)

    # -- run control -----------------------------------------------------------------------------

    def cancel_run(self, run_id: UUID | str, *, reason: str | None = None) -> bool:
        """Cancel a started run (False when it had already finished; raises RunNotFound)."""
        return self.client.cancel_run(run_id, reason=reason)

    def retry_run(self, run_id: UUID | str) -> int:
        """Retry a failed or cancelled run from where it stopped; returns the tasks queued."""
        return self.client.retry_run(run_id)

    def delete_run(self, run_id: UUID | str) -> None:
        """Delete a run with its steps, tasks and queue messages (raises RunNotFound)."""
        self.client.delete_run(run_id)

    def prune(
        self, *, older_than: timedelta | str | float, batch_size: int = DEFAULT_PRUNE_BATCH
    ) -> PruneResult:
        """Delete runs finished more than ``older_than`` ago (``"7d"``, a timedelta, seconds)
        and as old queue archive messages, and rate-limit buckets full again, ``batch_size``
        rows per transaction."""
        return self.client.prune(older_than=older_than, batch_size=batch_size)

    # -- runs API and live events (see Client.find_runs, Client.events) --------------------------

    def count_runs(
        self,
        *,
        flow_slug: FlowRef | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, int]:
        """Runs per status (started, completed, failed, cancelled)."""
        return self.client.count_runs(flow_slug=flow_slug, since=since, until=until)

    def find_runs(
        self,
        *,
        flow_slug: FlowRef | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        input_contains: Any = None,
        after: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        """A page of runs, newest first; ``after`` is the previous page's ``next``."""
        return self.client.find_runs(
            flow_slug=flow_slug,
            status=status,
            since=since,
            until=until,
            input_contains=input_contains,
            after=after,
            limit=limit,
        )

    def list_runs(
        self, *, flow_slug: FlowRef | None = None, status: str | None = None, limit: int = 50
    ) -> list[Run]:
        """The newest runs, at most ``limit``."""
        return self.client.list_runs(flow_slug=flow_slug, status=status, limit=limit)

    def flow_history(self, flow: FlowRef, *, limit: int = 50) -> list[Run]:
        """The most recent runs of one flow, newest first."""
        return self.client.flow_history(flow, limit=limit)

    def events(self, run_id: UUID | str, *, timeout: float | None = None) -> Iterator[RunEvent]:
        """A run's live events until it finishes (see :meth:`Client.events`)."""
        return self.client.events(run_id, timeout=timeout)

    def aevents(
        self, run_id: UUID | str, *, timeout: float | None = None
    ) -> AsyncIterator[RunEvent]:
        """:meth:`events` as an async iterator."""
        return self.client.aevents(run_id, timeout=timeout)
