"""The client: start runs, read and wait for them, manage flow definitions in the database.

Return values and errors (the seeds' ``{:ok, x}`` / ``{:error, reason}`` in Python):

=================================  ==========================================================
seeds                              here
=================================  ==========================================================
``{:ok, run_id}``                  the ``UUID`` is returned
``{:ok, run}``                     a :class:`~pgflow_kombu.types.Run` is returned
``{:error, :not_found}``           :class:`~pgflow_kombu.errors.RunNotFound` / ``FlowNotFound``
                                   (``WorkerNotFound`` for the app's ``stop_worker(flow)``)
``{:error, :timeout}``             :class:`~pgflow_kombu.errors.RunTimeout`
``{:error, %Run{status: failed}}`` :class:`~pgflow_kombu.errors.RunFailed` (``.run`` holds it)
``{:ok, boolean}``                 ``bool``
``{:error, term}``                 another :class:`~pgflow_kombu.errors.PgFlowError`
=================================  ==========================================================
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from pgflow_kombu.db.connect import DEFAULT_CONNECT_TIMEOUT, connect
from pgflow_kombu.db.errors import translate
from pgflow_kombu.db.queries import query
from pgflow_kombu.db.urls import check_url, redact, to_libpq
from pgflow_kombu.errors import (
    ConfigurationError,
    ConnectionFailed,
    ConstraintViolation,
    DatabaseError,
    FlowDefinitionError,
    FlowInputError,
    FlowNotFound,
    PermissionDenied,
    PgFlowError,
    RunFailed,
    RunNotFound,
    RunTimeout,
)
from pgflow_kombu.flows.definitions import define_flow
from pgflow_kombu.flows.dispatch import check_schedule, schedule_delay
from pgflow_kombu.flows.flow import Flow
from pgflow_kombu.flows.jsondata import Json, NotJsonError, to_json
from pgflow_kombu.flows.options import FlowOptions, StepOptions, check_priority
from pgflow_kombu.flows.shapes import FlowShape, compare_shapes
from pgflow_kombu.types import FlowInfo, Run, StepState, StepTask, WorkerInfo
from pgflow_kombu.waiting import RunListener

POOL_TIMEOUT = 30.0
"""Seconds to wait for a free pooled connection (psycopg_pool's default)."""

RUN_STATUSES = ("started", "completed", "failed")

CORE_VERSION = "0.8.1"
"""The pgflow core (database schema and SQL functions) this package is compatible with."""


class HasSlug(Protocol):
    @property
    def slug(self) -> str: ...


FlowRef = str | HasSlug


def flow_slug_of(flow: FlowRef) -> str:
    return flow if isinstance(flow, str) else flow.slug


class Client:
    """Talks to one database. Thread-safe; connections come from a pool opened on first use."""

    def __init__(
        self,
        url: str,
        *,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        poll_interval: float = 0.5,
    ) -> None:
        self.url = check_url(url)
        self.poll_interval = poll_interval
        self._pool = ConnectionPool(
            to_libpq(url),
            min_size=pool_min_size,
            max_size=pool_max_size,
            kwargs={"autocommit": True, "connect_timeout": DEFAULT_CONNECT_TIMEOUT},
            open=False,
            name="pgflow-client",
        )
        self._opened = False
        self._listener = RunListener(url)

    def close(self) -> None:
        self._listener.close()
        if self._opened:
            self._pool.close()
            self._opened = False

    @contextmanager
    def connection(self, given: psycopg.Connection[Any] | None = None) -> Iterator[Any]:
        """A connection: the caller's (inside their transaction) or one from the pool."""
        try:
            if given is not None:
                yield given
                return
            if not self._opened:
                self._open_pool()
            with self._pool.connection(timeout=POOL_TIMEOUT) as conn:
                yield conn
        except PgFlowError:
            raise
        except PoolTimeout as exc:
            raise ConnectionFailed(
                f"no connection to {redact(self.url)} became free within {POOL_TIMEOUT:g} s "
                f"(all {self._pool.max_size} in use, or the server stopped answering): raise "
                "pool_max_size or check the server"
            ) from exc
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def _open_pool(self) -> None:
        # One direct connection first: a wrong URL or a server that is down fails at once with
        # what was wrong, instead of the pool retrying in the background until its timeout.
        connect(self.url).close()
        self._pool.open(wait=True, timeout=DEFAULT_CONNECT_TIMEOUT)
        self._opened = True

    # -- runs ---------------------------------------------------------------------------------

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
        keys: Mapping[str, str] | None = None,
    ) -> UUID:
        """Start a run of ``flow`` and return its id.

        With ``connection=`` the run is started inside the caller's transaction: it exists (and its
        tasks become visible to workers) only if that transaction commits. ``delay_seconds`` or
        ``scheduled_at`` (timezone-aware; past times run now) keep its first tasks invisible until then.
        ``priority`` (an integer, higher first) overrides the flow's default; ``keys`` are the
        run's concurrency keys by scope, computed from the input when ``flow`` is a flow object.
        """
        delay = delay_from(delay_seconds, scheduled_at)
        slug = flow_slug_of(flow)
        check_run_priority(priority, slug)
        data = run_input(input)
        keys = run_keys_of(flow, data) if keys is None else keys
        params = {
            "flow_slug": slug,
            "input": Jsonb(data),
            "run_id": run_id_text(run_id),
        }
        try:
            with self.connection(connection) as conn:
                if priority is not None or keys:
                    row = conn.execute(
                        query("client.start_flow_controlled"),
                        {
                            **params,
                            "delay_seconds": delay,
                            "priority": priority,
                            "keys": Jsonb(dict(keys or {})),
                        },
                    ).fetchone()
                elif delay:
                    row = conn.execute(
                        query("client.start_flow_delayed"), {**params, "delay_seconds": delay}
                    ).fetchone()
                else:
                    row = conn.execute(query("client.start_flow"), params).fetchone()
        except DatabaseError as exc:
            raise self._start_failure(slug, exc, run_id=run_id) from exc
        assert row is not None
        started: UUID = row[0]
        return started

    def enqueue(
        self,
        job: FlowRef,
        input: Any = None,
        *,
        delay_seconds: float | None = None,
        scheduled_at: datetime | None = None,
    ) -> UUID:
        """Enqueue a job (a single-step flow, such as a task) now, or later with ``delay_seconds``
        or ``scheduled_at``; returns the run id. Jobs are flows: this is :meth:`start_flow`."""
        return self.start_flow(job, input, delay_seconds=delay_seconds, scheduled_at=scheduled_at)

    def enqueue_in(self, job: FlowRef, input: Any, delay_seconds: float) -> UUID:
        """Enqueue a job that becomes visible after ``delay_seconds`` (0 = now)."""
        check_schedule(delay_seconds, None, required=True)
        return self.enqueue(job, input, delay_seconds=delay_seconds)

    def enqueue_at(self, job: FlowRef, input: Any, scheduled_at: datetime) -> UUID:
        """Enqueue a job that becomes visible at ``scheduled_at`` (timezone-aware; past = now)."""
        check_schedule(None, scheduled_at, required=True)
        return self.enqueue(job, input, scheduled_at=scheduled_at)

    def start_many(
        self,
        flow: FlowRef,
        inputs: Sequence[Any],
        *,
        connection: psycopg.Connection[Any] | None = None,
        priority: int | None = None,
    ) -> list[UUID]:
        """Start one run per input in a single transaction (pipelined: one commit for all)."""
        slug = flow_slug_of(flow)
        check_run_priority(priority, slug)
        datas = [run_input(data, index) for index, data in enumerate(inputs)]
        keys = [run_keys_of(flow, data) for data in datas]
        controlled = priority is not None or any(keys)
        params = [
            {
                "flow_slug": slug,
                "input": Jsonb(data),
                "run_id": None,
                "delay_seconds": 0,
                "priority": priority,
                "keys": Jsonb(run_keys),
            }
            for data, run_keys in zip(datas, keys, strict=True)
        ]
        if not params:
            return []
        statement = query("client.start_flow_controlled" if controlled else "client.start_flow")
        run_ids: list[UUID] = []
        try:
            with self.connection(connection) as conn, conn.transaction(), conn.cursor() as cur:
                cur.executemany(statement, params, returning=True)
                while True:
                    row = cur.fetchone()
                    assert row is not None
                    run_ids.append(row[0])
                    if not cur.nextset():
                        break
        except DatabaseError as exc:
            raise self._start_failure(slug, exc) from exc
        return run_ids

    def _start_failure(
        self, slug: str, exc: DatabaseError, *, run_id: UUID | str | None = None
    ) -> PgFlowError:
        """What a failed ``start_flow`` means: an unknown flow, a used run id, or ``exc``."""
        if isinstance(exc, (ConnectionFailed, PermissionDenied)):
            return exc
        if isinstance(exc, ConstraintViolation) and exc.diag.constraint_name == "runs_pkey":
            return FlowInputError(
                f"run_id {run_id} is already used by another run: pass a new UUID, or none"
            )
        try:
            exists = self.flow_exists(slug)
        except PgFlowError:
            return exc
        if exists:
            return exc
        return FlowNotFound(
            f"no flow {slug!r} in the database: start it through the app that defines it "
            f"(which compiles it), or run 'pgflow-kombu flows upsert {slug} -A <app>'"
        )

    def get_run(self, run_id: UUID | str) -> Run:
        """The run, without its step states; raises :class:`RunNotFound`."""
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(query("client.get_run"), {"run_id": as_uuid(run_id)}).fetchone()
        if row is None:
            raise RunNotFound(f"no run with id {run_id}")
        return Run.model_validate(row)

    def get_run_with_states(self, run_id: UUID | str) -> Run:
        """The run with its step states (in step order), each with its tasks."""
        params = {"run_id": as_uuid(run_id)}
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(query("client.get_run"), params).fetchone()
            if row is None:
                raise RunNotFound(f"no run with id {run_id}")
            states = cur.execute(query("client.get_step_states"), params).fetchall()
            tasks = cur.execute(query("client.get_step_tasks"), params).fetchall()
        by_step: dict[str, list[StepTask]] = {}
        for task in tasks:
            by_step.setdefault(task["step_slug"], []).append(StepTask.model_validate(task))
        step_states = tuple(
            StepState.model_validate({**s, "tasks": tuple(by_step.get(s["step_slug"], ()))})
            for s in states
        )
        return Run.model_validate({**row, "step_states": step_states})

    def list_runs(
        self, *, flow_slug: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[Run]:
        """The newest runs first, at most ``limit``; optionally of one flow or status."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigurationError(f"limit must be an integer >= 0, got {limit!r}")
        if status is not None and status not in RUN_STATUSES:
            raise ConfigurationError(
                f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r}"
            )
        params = {"flow_slug": flow_slug, "status": status, "limit": limit}
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("client.list_runs"), params).fetchall()
        return [Run.model_validate(r) for r in rows]

    def wait(
        self,
        run_id: UUID | str,
        *,
        timeout: float | None = 60.0,
        poll_interval: float | None = None,
        raise_on_failure: bool = True,
    ) -> Run:
        """Block until the run finishes; return it with its step states.

        Raises :class:`RunTimeout` after ``timeout`` seconds (None waits for ever), and
        :class:`RunFailed` when it failed (unless ``raise_on_failure=False``).
        """
        check_timeout(timeout)
        uid = as_uuid(run_id)
        self.get_run(uid)  # an unknown run or an unreachable server fails before listening
        interval = poll_interval or self.poll_interval
        deadline = None if timeout is None else time.monotonic() + timeout
        event = self._listener.subscribe(uid)
        try:
            while True:
                event.clear()
                run = self.get_run(uid)
                if run.finished:
                    run = self.get_run_with_states(uid)
                    if run.status == "failed" and raise_on_failure:
                        raise RunFailed(
                            f"run {uid} of flow {run.flow_slug!r} failed: {run.error_message}",
                            run=run,
                        )
                    return run
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RunTimeout(
                        f"run {uid} of flow {run.flow_slug!r} did not finish within {timeout} s",
                        run_id=uid,
                    )
                event.wait(interval if remaining is None else min(interval, remaining))
        finally:
            self._listener.unsubscribe(uid, event)

    def start_flow_sync(
        self,
        flow: FlowRef,
        input: Any = None,
        *,
        timeout: float | None = 60.0,
        poll_interval: float | None = None,
        run_id: UUID | str | None = None,
    ) -> Run:
        """Start a run and wait for it: the completed run, or RunFailed / RunTimeout."""
        started = self.start_flow(flow, input, run_id=run_id)
        return self.wait(started, timeout=timeout, poll_interval=poll_interval)

    # -- flows --------------------------------------------------------------------------------

    def flow_exists(self, slug: str) -> bool:
        with self.connection() as conn:
            row = conn.execute(query("client.flow_exists"), {"flow_slug": slug}).fetchone()
        return bool(row and row[0])

    def list_flows(self) -> list[FlowInfo]:
        """The flows the database holds."""
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("client.list_flows")).fetchall()
        return [FlowInfo.model_validate(r) for r in rows]

    def get_flow_shape(self, slug: str) -> FlowShape:
        """The definition the database holds for ``slug`` as plain data (raises FlowNotFound)."""
        with self.connection() as conn:
            return read_flow_shape(conn, slug)

    def compile_flow(
        self, shape: FlowShape, *, connection: psycopg.Connection[Any] | None = None
    ) -> bool:
        """Create a flow and its steps from plain data, in one transaction; False (nothing
        written) when the slug exists already, e.g. created meanwhile by another process."""
        with self.connection(connection) as conn, conn.transaction():
            lock_flow_slug(conn, shape["flow_slug"])
            row = conn.execute(query("client.flow_exists"), {"flow_slug": shape["flow_slug"]})
            if row.fetchone() == (True,):
                return False
            create_flow_from_shape(conn, shape)
        return True

    def store_limits(self, flow: Flow) -> None:
        """Store ``flow``'s limits and default priority (what its code declares) for the
        workers' claims; a flow declaring none has its stored ones removed."""
        with self.connection() as conn:
            store_limits(conn, flow)

    def delete_flow(self, slug: str) -> None:
        """Delete a flow with all its runs, tasks and its queue (raises FlowNotFound)."""
        with self.connection() as conn:
            row = conn.execute(query("client.delete_flow"), {"flow_slug": slug}).fetchone()
        if not (row and row[0]):
            raise FlowNotFound(f"no flow {slug!r} in the database")

    def replace_flow(self, shape: FlowShape) -> FlowShape | None:
        """Destructive recompile: delete ``shape``'s slug (runs included), then create it anew.

        Returns the definition the database held before (None for a new flow). Concurrent
        replacements of one slug are serialised, so the result is one of them, never a mix.
        """
        with self.connection() as conn, conn.transaction():
            lock_flow_slug(conn, shape["flow_slug"])
            try:
                before: FlowShape | None = read_flow_shape(conn, shape["flow_slug"])
            except FlowNotFound:
                before = None
            else:
                conn.execute(query("client.delete_flow"), {"flow_slug": shape["flow_slug"]})
            create_flow_from_shape(conn, shape)
        return before

    def upsert_flow(
        self,
        slug: str,
        *,
        steps: Sequence[Mapping[str, Any]],
        max_attempts: int | None = None,
        base_delay: int | None = None,
        timeout: int | None = None,
    ) -> dict[str, Any]:
        """(Re)compile a flow from plain data. Destructive for an existing slug: its definition,
        runs, tasks and queued messages are deleted first.

        Each step is a mapping with ``slug`` (required), ``deps`` (default ``[]``), ``step_type``
        (``"single"``, the default, or ``"map"``) and optional ``max_attempts``, ``base_delay``,
        ``timeout`` and ``start_delay`` (see :func:`~pgflow_kombu.flows.define_flow`). Options
        left out take pgflow 0.8.1's defaults (``create_flow``: max_attempts 3, base_delay 5,
        timeout 60), not the Elixir port's (whose docs say base_delay 1), so that a flow
        compiled here matches one compiled by pgflow's own tools.

        Returns ``{"status": "compiled", "differences": []}`` for a new flow, and
        ``{"status": "recompiled", "differences": [...]}`` for a replaced one, listing how the
        stored definition differed. The whole replacement runs in one transaction holding a
        transaction-level advisory lock on the slug: concurrent upserts of one slug leave
        exactly one of their definitions.
        """
        shape = define_flow(
            slug, steps=steps, max_attempts=max_attempts, base_delay=base_delay, timeout=timeout
        ).shape()
        before = self.replace_flow(shape)
        if before is None:
            return {"status": "compiled", "differences": []}
        return {
            "status": "recompiled",
            "differences": [str(d) for d in compare_shapes(before, shape)],
        }

    # -- workers and health -------------------------------------------------------------------

    def list_workers(
        self, *, include_stale: bool = False, stale_after: float = 30.0
    ) -> list[WorkerInfo]:
        params = {"include_stale": include_stale, "stale_after": stale_after}
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("client.list_workers"), params).fetchall()
        return [WorkerInfo.model_validate(r) for r in rows]

    def health_check(self) -> dict[str, Any]:
        """Database reachability and counts; ``status`` is ``"ok"`` when the query succeeded."""
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(query("client.health")).fetchone()
        assert row is not None
        return {"status": "ok", "core_version": CORE_VERSION, **row}

    @staticmethod
    def core_version() -> str:
        return CORE_VERSION


def read_flow_shape(conn: psycopg.Connection[Any], slug: str) -> FlowShape:
    with conn.cursor(row_factory=dict_row) as cur:
        flow = cur.execute(query("client.get_flow"), {"flow_slug": slug}).fetchone()
        if flow is None:
            raise FlowNotFound(f"no flow {slug!r} in the database")
        steps = cur.execute(query("client.get_flow_steps"), {"flow_slug": slug}).fetchall()
    return {
        "flow_slug": slug,
        "options": {
            "max_attempts": flow["opt_max_attempts"],
            "base_delay": flow["opt_base_delay"],
            "timeout": flow["opt_timeout"],
        },
        "steps": [
            {
                "slug": s["step_slug"],
                "deps": list(s["deps"]),
                "step_type": s["step_type"],
                "options": {
                    key: s[f"opt_{key}"]
                    for key in ("max_attempts", "base_delay", "timeout", "start_delay")
                    if s[f"opt_{key}"] is not None
                },
            }
            for s in steps
        ],
    }


def lock_flow_slug(conn: psycopg.Connection[Any], slug: str) -> None:
    """Hold the slug's advisory lock until the transaction ends: one definition change at a
    time per flow (``create_flow``/``add_step`` alone would merge concurrent definitions)."""
    conn.execute(query("client.lock_flow_slug"), {"flow_slug": slug})


def create_flow_from_shape(conn: psycopg.Connection[Any], shape: FlowShape) -> None:
    """``pgflow.create_flow`` + one ``pgflow.add_step`` per step, options only where set.

    The shape is validated first (:class:`FlowDefinitionError` says what is wrong, naming an
    option out of its column's range): the SQL raises pgflow 0.8.1's constraint errors, which
    name a constraint, not the problem.
    """
    check_shape_options(shape)
    Flow.from_shape(shape)
    options = shape["options"]
    conn.execute(
        query("client.create_flow"),
        {
            "flow_slug": shape["flow_slug"],
            "max_attempts": options.get("max_attempts"),
            "base_delay": options.get("base_delay"),
            "timeout": options.get("timeout"),
        },
    )
    for step in shape["steps"]:
        step_options = step["options"]
        conn.execute(
            query("client.add_step"),
            {
                "flow_slug": shape["flow_slug"],
                "step_slug": step["slug"],
                "deps": list(step["deps"]),
                "max_attempts": step_options.get("max_attempts"),
                "base_delay": step_options.get("base_delay"),
                "timeout": step_options.get("timeout"),
                "start_delay": step_options.get("start_delay"),
                "step_type": step["step_type"],
            },
        )


def check_shape_options(shape: FlowShape) -> None:
    """Raise :class:`FlowDefinitionError` for an option of the shape out of its column's range."""
    slug = shape["flow_slug"]
    try:
        FlowOptions(**shape["options"]).validate(slug)
        for step in shape["steps"]:
            StepOptions(**step["options"]).validate(slug, step["slug"])
    except TypeError as exc:  # an unknown option name
        raise FlowDefinitionError(f"flow {slug!r}: {exc}", flow_slug=slug) from None


def run_keys_of(flow: FlowRef, data: Json) -> dict[str, str]:
    """A run's concurrency keys, when ``flow`` is a flow object declaring keyed limits."""
    run_keys = getattr(flow, "run_keys", None)
    return dict(run_keys(data)) if run_keys is not None else {}


def check_run_priority(priority: object, slug: str) -> None:
    """A run's priority is None or an integer; raises FlowInputError otherwise."""
    if priority is None:
        return
    try:
        check_priority(priority, f"flow {slug!r}")
    except FlowDefinitionError as exc:
        raise FlowInputError(str(exc)) from None


def store_limits(conn: psycopg.Connection[Any], flow: Any) -> None:
    """Write a flow object's limits (``Flow.limit_rows``) into ``pgflow_kombu.flow_limits``,
    replacing what was stored; nothing for a flow that declares none and never had any."""
    rows = flow.limit_rows()
    conn.execute(query("client.set_flow_limits"), {"flow_slug": flow.slug, "limits": Jsonb(rows)})


def delay_from(delay_seconds: float | None, scheduled_at: datetime | None) -> int:
    """Whole seconds to hold a run's first tasks; raises FlowInputError (see schedule_delay)."""
    return schedule_delay(delay_seconds, scheduled_at)


def run_input(value: Any, index: int | None = None) -> Json:
    """A run input as JSON that ``jsonb`` accepts, else :class:`FlowInputError` saying where not.

    Every start goes through here (the app, the CLI, ``start_many``), so PostgreSQL never sees
    NaN, Infinity or a NUL character.
    """
    try:
        return to_json(value)
    except NotJsonError as exc:
        which = "the run input" if index is None else f"run input #{index}"
        raise FlowInputError(f"{which} is not JSON that PostgreSQL accepts: {exc}") from exc


def run_id_text(value: UUID | str | None) -> str | None:
    """A caller's run id as text for ``::uuid``; raises :class:`FlowInputError` if not a UUID."""
    if value is None:
        return None
    if isinstance(value, UUID):
        return str(value)
    try:
        return str(UUID(str(value)))
    except ValueError:
        raise FlowInputError(f"run_id {value!r} is not a UUID") from None


def check_timeout(timeout: float | None) -> None:
    """A wait's timeout: None (for ever) or a number of seconds >= 0."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ConfigurationError(
            f"timeout must be a number of seconds >= 0 or None, got {timeout!r}"
        )


def as_uuid(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise RunNotFound(f"{value!r} is not a run id (expected a UUID)") from None
