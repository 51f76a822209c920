"""``PgFlow``: the application object users create once and import everywhere.

It holds the settings, a registry of the flows and tasks defined through it, and is the facade
over the client (start, read and wait for runs; manage flows) and the worker. Several apps in one
process share nothing. No database is touched until a run is started or a worker runs; creating
an app never starts a server.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload
from uuid import UUID

import psycopg

from pgflow_kombu.client import CORE_VERSION, Client, FlowRef, flow_slug_of
from pgflow_kombu.client.control import DEFAULT_PRUNE_BATCH
from pgflow_kombu.client.inputs import as_uuid, check_idempotency
from pgflow_kombu.errors import ConfigurationError, FlowMismatch, FlowNotFound, WorkerNotFound
from pgflow_kombu.flows import Flow
from pgflow_kombu.flows.dispatch import check_schedule
from pgflow_kombu.flows.eager import EagerRuns
from pgflow_kombu.flows.jsondata import Json
from pgflow_kombu.flows.options import ConcurrencyKey
from pgflow_kombu.flows.schedules import CatchUp, ScheduleSpec
from pgflow_kombu.flows.shapes import FlowShape, compare_shapes
from pgflow_kombu.handles import FinishedRun, RunHandle
from pgflow_kombu.observability.hooks import Hooks
from pgflow_kombu.settings import Settings
from pgflow_kombu.types import (
    FlowInfo,
    PruneResult,
    Run,
    RunEvent,
    RunPage,
    ScheduleInfo,
    WorkerInfo,
)

if TYPE_CHECKING:
    from pgflow_kombu.flows import Task
    from pgflow_kombu.worker import Worker
    from pgflow_kombu.worker.byflow import FlowWorkers

__all__ = ["PgFlow"]

P = ParamSpec("P")
R = TypeVar("R")


class PgFlow:
    """An application: ``app = PgFlow()`` reads ``PGFLOW_DATABASE_URL``; or pass ``database_url``.

    ``eager=True`` runs every started flow in the calling process, with no worker and no
    database (for tests): handles (the same :class:`RunHandle` type) come back already finished.
    Eager runs validate inputs and outputs, retry failed tasks up to ``max_attempts`` (without
    waiting out the backoff), take ``run_id`` and ``idempotency_key`` (kept in memory), and
    raise :class:`ConfigurationError` for what they cannot honour: ``connection=`` and delays
    (``countdown``/``eta``/``enqueue_in``) into the future.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        eager: bool = False,
        **settings: Any,
    ) -> None:
        self.settings = Settings.load(database_url=database_url, **settings)
        self.eager = eager
        self._flows: dict[str, Flow] = {}
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._client: Client | None = None
        self._verified: set[str] = set()
        self._lock = threading.Lock()
        self._flow_workers: FlowWorkers | None = None
        # Callbacks on what workers serving this app do (see pgflow_kombu.observability.hooks).
        self.hooks = Hooks()
        self._eager_runs = EagerRuns()

    def __repr__(self) -> str:
        return f"<PgFlow flows={sorted(self._flows)}>"

    # -- the database --------------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        """The configured URL; else ``PGFLOW_DATABASE_URL`` as it is at first use, so that a
        module-level ``app = PgFlow()`` finds the database a CLI command set up after import."""
        url = self.settings.database_url or os.environ.get("PGFLOW_DATABASE_URL")
        if not url:
            raise ConfigurationError(
                "no database configured: set PGFLOW_DATABASE_URL or pass PgFlow(database_url=...) "
                "(the pgflow-kombu CLI starts an embedded PostgreSQL and sets it for you)"
            )
        return url

    @property
    def client(self) -> Client:
        """The client on this app's database (created on first use)."""
        with self._lock:
            if self._client is None:
                self._client = Client(
                    self.database_url,
                    pool_min_size=self.settings.pool_min_size,
                    pool_max_size=self.settings.pool_max_size,
                    poll_interval=self.settings.poll_interval,
                )
            return self._client

    def close(self) -> None:
        """Stop this app's workers, if any, and close connections."""
        self.stop_worker()
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- defining flows and tasks --------------------------------------------------------------

    def flow(
        self,
        slug: str,
        *,
        max_attempts: int | None = None,
        base_delay: int | None = None,
        timeout: int | None = None,
        max_concurrency: int | None = None,
        rate_limit: str | None = None,
        concurrency_key: ConcurrencyKey | None = None,
        priority: int | None = None,
        schedule: str | None = None,
    ) -> Flow:
        """Create and register a flow; add steps with ``@flow.step`` and ``@flow.map``.

        ``max_concurrency``, ``rate_limit`` (``"100/m"``), ``concurrency_key`` and ``priority``
        (the default of its runs) are enforced when our workers claim tasks (README: flow
        control). ``schedule`` (a cron expression) starts it with input ``{}`` at every tick
        (more options: :meth:`schedule`)."""
        flow = Flow(
            slug,
            max_attempts=max_attempts,
            base_delay=base_delay,
            timeout=timeout,
            max_concurrency=max_concurrency,
            rate_limit=rate_limit,
            concurrency_key=concurrency_key,
            priority=priority,
            schedule=schedule,
        )
        return self.register(flow)

    @overload
    def register(self, item: Flow) -> Flow: ...

    @overload
    def register(self, item: Task[P, R]) -> Task[P, R]: ...

    def register(self, item: Flow | Task[P, R]) -> Flow | Task[P, R]:
        """Register a flow or task built elsewhere (e.g. ``(a >> b).to_flow("etl")``); returns it."""
        from pgflow_kombu.flows import Task

        if isinstance(item, Task):
            self._register_flow(item.flow)
            self._tasks[item.flow.slug] = item
            return item
        if not isinstance(item, Flow):
            raise TypeError(f"can only register flows and tasks, not {item!r}")
        return self._register_flow(item)

    def _register_flow(self, flow: Flow) -> Flow:
        existing = self._flows.get(flow.slug)
        if existing is not None and existing is not flow:
            raise ConfigurationError(f"a flow with slug {flow.slug!r} is already registered")
        owner = flow.dispatcher
        if owner is not None and owner is not self:
            # Rebinding would leave the first app listing a flow that starts through this one.
            raise ConfigurationError(
                f"flow {flow.slug!r} is already registered with {owner!r}; it cannot also be "
                f"registered with {self!r}: a flow belongs to one app (define it again, e.g. "
                "in a function called once per app, to use it in another)"
            )
        self._flows[flow.slug] = flow
        flow.bind(self)
        return flow

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        max_attempts: int | None = None,
        base_delay: int | None = None,
        timeout: int | None = None,
        start_delay: int | None = None,
        max_concurrency: int | None = None,
        rate_limit: str | None = None,
        concurrency_key: ConcurrencyKey | None = None,
        priority: int | None = None,
        schedule: str | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        max_attempts: int | None = None,
        base_delay: int | None = None,
        timeout: int | None = None,
        start_delay: int | None = None,
        max_concurrency: int | None = None,
        rate_limit: str | None = None,
        concurrency_key: ConcurrencyKey | None = None,
        priority: int | None = None,
        schedule: str | None = None,
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Make a function a job: a single-step flow. ``task(...)`` still calls the function.

        ``schedule`` (a cron expression, e.g. ``"*/5 * * * *"``) starts it with no arguments at
        every tick; see :meth:`schedule` for input, time zone and catch-up."""
        from pgflow_kombu.flows import Task

        def decorate(func: Callable[P, R]) -> Task[P, R]:
            task = Task(
                func,
                name=name,
                max_attempts=max_attempts,
                base_delay=base_delay,
                timeout=timeout,
                start_delay=start_delay,
                max_concurrency=max_concurrency,
                rate_limit=rate_limit,
                concurrency_key=concurrency_key,
                priority=priority,
                schedule=schedule,
            )
            return self.register(task)

        return decorate(fn) if fn is not None else decorate

    def chain(self, slug: str, *items: Any, **options: Any) -> Flow:
        """A flow from existing tasks, each step fed its predecessor's output (Celery's chain).

        Items may be tasks, ``each(task)`` for one run per element, lists for fan-out/fan-in.
        """
        from pgflow_kombu.flows import chain

        return self.register(chain(slug, *items, **options))

    @property
    def flows(self) -> Mapping[str, Flow]:
        """The flows registered with this app, by slug (tasks included)."""
        return dict(self._flows)

    def get_flow(self, flow: FlowRef) -> Flow:
        """A registered flow by slug (raises FlowNotFound)."""
        slug = flow_slug_of(flow)
        try:
            return self._flows[slug]
        except KeyError:
            raise FlowNotFound(f"no flow {slug!r} is registered with this app") from None

    def list_flows(self, *, database: bool = False) -> list[FlowShape] | list[FlowInfo]:
        """The registered flows' shapes; ``database=True`` lists what the database holds."""
        if database:
            return self.client.list_flows()
        return [f.shape() for f in self._flows.values()]

    # -- flow definitions in the database -------------------------------------------------------

    def ensure_flow(self, flow: Flow, *, recompile: bool = False) -> None:
        """Make sure the database holds ``flow`` as defined in code.

        A missing flow is created; one that differs raises :class:`FlowMismatch` unless
        ``recompile=True``, which replaces it (deleting its runs, as ``upsert_flow`` does).
        """
        if flow.slug in self._verified and not recompile:
            return
        shape = flow.shape()
        try:
            stored = self.client.get_flow_shape(flow.slug)
        except FlowNotFound:
            if self.client.compile_flow(shape):
                self.client.store_limits(flow)
                self._verified.add(flow.slug)
                return
            stored = self.client.get_flow_shape(flow.slug)  # created meanwhile elsewhere
        differences = compare_shapes(shape, stored)
        if differences and not recompile:
            listed = "; ".join(str(d) for d in differences)
            raise FlowMismatch(
                f"flow {flow.slug!r} in the database differs from the code ({listed}): "
                f"run 'pgflow-kombu flows upsert {flow.slug} -A <app>' or "
                f"app.ensure_flow(flow, recompile=True) to replace it (this deletes its runs), "
                "or give the changed flow a new slug",
                flow_slug=flow.slug,
                differences=[str(d) for d in differences],
            )
        if differences:
            self.client.replace_flow(shape)
        self.client.store_limits(flow)
        self._verified.add(flow.slug)

    def upsert_flow(
        self,
        slug: str,
        *,
        steps: Sequence[Mapping[str, Any]],
        max_attempts: int | None = None,
        base_delay: int | None = None,
        timeout: int | None = None,
    ) -> dict[str, Any]:
        """(Re)compile a flow from plain data; destructive for an existing slug (runs deleted).

        Returns ``{"status": "compiled", "differences": []}`` for a new flow and
        ``{"status": "recompiled", "differences": [...]}`` for a replaced one (the differences
        from the definition the database held). Options left out take pgflow 0.8.1's defaults
        (max_attempts 3, base_delay 5, timeout 60), not the Elixir port's base_delay 1.
        Concurrent upserts of one slug are serialised by an advisory lock: one definition wins
        whole. See :meth:`Client.upsert_flow`.
        """
        result = self.client.upsert_flow(
            slug, steps=steps, max_attempts=max_attempts, base_delay=base_delay, timeout=timeout
        )
        self._verified.discard(slug)
        return result

    def delete_flow(self, slug: str) -> None:
        """Delete a flow with all its runs, tasks and queue (raises FlowNotFound)."""
        self.client.delete_flow(slug)
        self._verified.discard(slug)

    def flow_exists(self, slug: str) -> bool:
        """Whether the database holds a flow with this slug."""
        return self.client.flow_exists(slug)

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
    ) -> list[RunHandle]:
        """Start one run per input in one transaction: much faster than a loop for bulk work."""
        slug = flow_slug_of(flow)
        registered = self._registered_or_eager(slug)
        if registered is not None:
            inputs = [registered.prepare_input(i) for i in inputs]
            if self.eager:
                return [self._start_eager(registered, i, connection=connection) for i in inputs]
            self.ensure_flow(registered)
        run_ids = self.client.start_many(
            registered if registered is not None else slug,
            inputs,
            connection=connection,
            priority=priority,
        )
        return [RunHandle(self.client, run_id, slug) for run_id in run_ids]

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
        and as old queue archive messages, ``batch_size`` rows per transaction."""
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

    # -- schedules ---------------------------------------------------------------------------------

    def schedule(
        self,
        flow: FlowRef,
        *,
        cron: str,
        input: Any = None,
        timezone: str = "UTC",
        name: str | None = None,
        catch_up: CatchUp = "none",
        catch_up_limit: int = 100,
        misfire_grace: float = 30.0,
    ) -> ScheduleSpec:
        """Start a run of a registered flow (or task) with ``input`` at every tick of ``cron``.

        The schedule belongs to the code: workers serving the flow write it to the database when
        they start (or call :meth:`sync_schedules`), and disable it once the code drops it. For
        a flow this app does not define, use ``app.client.create_schedule``. See
        :mod:`pgflow_kombu.flows.schedules` for the cron syntax (seconds as a sixth field),
        time zones and the catch-up policies.
        """
        registered = self.get_flow(flow)
        data = registered.prepare_input({} if input is None else input)
        return registered.add_schedule(
            cron,
            input=data,
            timezone=timezone,
            name=name,
            catch_up=catch_up,
            catch_up_limit=catch_up_limit,
            misfire_grace=misfire_grace,
        )

    @property
    def schedules(self) -> list[ScheduleSpec]:
        """The schedules of the registered flows, as defined in code."""
        return [s for f in self._flows.values() for s in f.schedules]

    def sync_schedules(self) -> list[str]:
        """Write this app's schedules to the database now (workers do it when they start);
        returns the names of code schedules of its flows that were disabled."""
        from pgflow_kombu.worker.schedulesync import check_schedules

        specs = check_schedules(self._flows, None)
        return self.client.sync_schedules(specs, flows=list(self._flows))

    def list_schedules(self, *, flow_slug: str | None = None) -> list[ScheduleInfo]:
        """The schedules in the database."""
        return self.client.list_schedules(flow_slug=flow_slug)

    def pause_schedule(self, name: str) -> None:
        self.client.pause_schedule(name)

    def resume_schedule(self, name: str) -> ScheduleInfo:
        return self.client.resume_schedule(name)

    def trigger_schedule(self, name: str) -> RunHandle:
        """Start a run of the schedule now, paused or not."""
        schedule = self.client.get_schedule(name)
        return RunHandle(self.client, self.client.trigger_schedule(name), schedule.flow_slug)

    # -- workers and health ----------------------------------------------------------------------

    @overload
    def start_worker(self, flow: FlowRef, /, **options: Any) -> Worker: ...

    @overload
    def start_worker(
        self, flow: None = None, /, *, flows: Sequence[FlowRef] | None = None, **options: Any
    ) -> dict[str, Worker]: ...

    def start_worker(
        self,
        flow: FlowRef | None = None,
        /,
        *,
        flows: Sequence[FlowRef] | None = None,
        **options: Any,
    ) -> Worker | dict[str, Worker]:
        """Serve flows from background threads of this process; one worker per flow.

        ``start_worker(flow)`` returns that flow's :class:`~pgflow_kombu.worker.Worker`; when the
        flow already has a running one it is returned as is (``options`` then change nothing).
        ``start_worker()`` does the same for every registered flow (``flows=[...]`` for some)
        and returns the workers by flow slug.

        Every flow gets a worker of its own (its own pool of ``concurrency`` slots, connections,
        heartbeat thread and ``pgflow.workers`` row), so that :meth:`stop_worker` can stop one
        flow's work and leave the others running. ``options`` are :class:`Worker`'s
        (``concurrency``, ``pool``, ``prefetch``, ``shutdown_timeout``, ...) and apply to each.
        To serve many flows from one shared pool, run ``Worker(app.flows, url)`` or the
        ``pgflow-kombu worker`` command instead.
        """
        if flow is not None and flows is not None:
            raise ConfigurationError("give start_worker one flow or flows=[...], not both")
        if isinstance(flow, (list, tuple, set)):
            raise ConfigurationError(
                f"start_worker takes one flow; for several pass flows={list(flow)!r}"
            )
        served = self._served([flow] if flow is not None else flows)
        with self._lock:
            if self._flow_workers is None:
                from pgflow_kombu.worker.byflow import FlowWorkers

                self._flow_workers = FlowWorkers()

        def compile_flows() -> None:  # after the options were checked: bad ones write nothing
            for each in served.values():
                self.ensure_flow(each)

        options.setdefault("hooks", self.hooks)
        workers = self._flow_workers.start(
            served, self.database_url, prepare=compile_flows, **options
        )
        if flow is not None:
            return workers[flow_slug_of(flow)]
        return workers

    def stop_worker(self, flow: FlowRef | None = None, /, *, timeout: float | None = None) -> bool:
        """Stop ``flow``'s worker (the other flows' workers keep running), or with no flow
        every worker of this app; running handlers get ``timeout`` seconds (default: the
        worker's ``shutdown_timeout``).

        ``stop_worker(flow)`` returns True, or raises :class:`WorkerNotFound` (the seeds'
        ``{:error, :not_found}``) when no worker serves that flow. ``stop_worker()`` returns
        whether there was any worker to stop.
        """
        workers = self._flow_workers
        if flow is None:
            return workers is not None and workers.stop_all(timeout)
        if not isinstance(flow, str) and not isinstance(getattr(flow, "slug", None), str):
            raise TypeError(
                f"stop_worker takes a flow, a task or a slug, not {flow!r} (timeout= is a keyword)"
            )
        slug = flow_slug_of(flow)
        if workers is None:
            raise WorkerNotFound(f"no worker of this app serves flow {slug!r}")
        workers.stop(slug, timeout)
        return True

    @property
    def workers(self) -> dict[str, Worker]:
        """The running workers started by :meth:`start_worker`, by flow slug."""
        return {} if self._flow_workers is None else self._flow_workers.running()

    def _served(self, flows: Sequence[FlowRef] | None) -> dict[str, Flow]:
        if flows is None:
            return dict(self._flows)
        return {flow_slug_of(f): self.get_flow(f) for f in flows}

    def list_workers(self, *, include_stale: bool = False) -> list[WorkerInfo]:
        return self.client.list_workers(
            include_stale=include_stale, stale_after=self.settings.stalled_after
        )

    def health_check(self) -> dict[str, Any]:
        """``{"status": "ok", "workers": [...], "flows": [...], ...}`` (raises when unreachable)."""
        health = self.client.health_check()
        health["workers"] = [w.model_dump(mode="json") for w in self.list_workers()]
        health["flows"] = sorted(self._flows)
        return health

    @staticmethod
    def core_version() -> str:
        """The pgflow core version whose schema and SQL functions this package matches."""
        return CORE_VERSION
