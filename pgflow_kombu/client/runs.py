"""Runs: start them (now, later, in the caller's transaction, many at once), read them, wait
for them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgflow_kombu.client.base import ClientBase, FlowRef, flow_slug_of
from pgflow_kombu.client.inputs import (
    as_uuid,
    check_idempotency,
    check_idempotency_keys,
    check_run_priority,
    check_timeout,
    delay_from,
    run_id_text,
    run_input,
    run_keys_of,
)
from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import (
    ConnectionFailed,
    ConstraintViolation,
    DatabaseError,
    FlowInputError,
    FlowNotFound,
    PermissionDenied,
    PgFlowError,
    RunCancelled,
    RunFailed,
    RunNotFound,
    RunTimeout,
)
from pgflow_kombu.flows.dispatch import check_schedule
from pgflow_kombu.observability.runspan import run_start_span
from pgflow_kombu.types import Run, StepState, StepTask

__all__ = ["RunsMixin"]


class RunsMixin(ClientBase):
    def start_flow(
        self,
        flow: FlowRef,
        input: Any = None,
        *,
        run_id: UUID | str | None = None,
        connection: psycopg.Connection[Any] | None = None,
        delay_seconds: float | None = None,
        scheduled_at: datetime | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
        priority: int | None = None,
        keys: Mapping[str, str] | None = None,
    ) -> UUID:
        """Start a run of ``flow`` and return its id.

        With ``connection=`` the run is started inside the caller's transaction: it exists (and its
        tasks become visible to workers) only if that transaction commits. ``delay_seconds`` or
        ``scheduled_at`` (timezone-aware; past times run now) keep its first tasks invisible until then.

        ``idempotency_key``: a start of the same flow with a key already used returns the run
        that key started, and starts nothing (the input is not compared). A concurrent start
        with the same key waits for the first one's transaction and returns its run. The key
        lives as long as its run (deleting or pruning the run frees it), or
        ``idempotency_ttl`` seconds when given.

        ``priority`` (an integer, higher first) overrides the flow's default; ``keys`` are the
        run's concurrency keys by scope, computed from the input when ``flow`` is a flow object.
        """
        delay = delay_from(delay_seconds, scheduled_at)
        slug = flow_slug_of(flow)
        key = check_idempotency(idempotency_key, idempotency_ttl)
        check_run_priority(priority, slug)
        data = run_input(input)
        keys = run_keys_of(flow, data) if keys is None else keys
        params: dict[str, Any] = {
            "flow_slug": slug,
            "input": Jsonb(data),
            "run_id": run_id_text(run_id),
        }
        if priority is not None or keys:  # flow control (0060_limits.sql)
            params.update(priority=priority, keys=Jsonb(dict(keys or {})))
        try:
            with self.connection(connection) as conn:
                if key is None:
                    return self._start_one(conn, slug, params, delay)
                # The key's reservation and its run commit together: in a transaction of their
                # own, or in the caller's (where psycopg's transaction() would commit it early).
                together = conn.transaction() if conn.autocommit else contextlib.nullcontext()
                with together:
                    reserved = conn.execute(
                        query("idempotency.reserve_idempotency_key"),
                        {**params, "key": key, "ttl_seconds": idempotency_ttl},
                    ).fetchone()
                    assert reserved is not None
                    if not reserved[1]:
                        existing: UUID = reserved[0]
                        return existing
                    params["run_id"] = str(reserved[0])
                    return self._start_one(conn, slug, params, delay)
        except DatabaseError as exc:
            raise self._start_failure(slug, exc, run_id=run_id) from exc

    @staticmethod
    def _start_one(
        conn: psycopg.Connection[Any], slug: str, params: dict[str, Any], delay: int
    ) -> UUID:
        with run_start_span(slug) as span:
            name = "client.start_flow_delayed" if delay else "client.start_flow"
            if "priority" in params:
                name = "client.start_flow_controlled"
            if delay or "priority" in params:
                params["delay_seconds"] = delay
            if span is not None:  # the run keeps the start span's trace context
                params.update(span.params)
                name = name.replace("client.", "observability.") + "_traced"
            row = conn.execute(query(name), params).fetchone()
            if span is not None and row is not None:
                span.started(row[0])
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
        idempotency_keys: Sequence[str | None] | None = None,
        idempotency_ttl: float | None = None,
    ) -> list[UUID]:
        """Start one run per input in a single transaction (one statement for all); returns
        their ids in input order. ``priority`` applies to each run; a flow object gives each
        run its concurrency keys.

        ``idempotency_keys`` (one per input, ``None`` for none) deduplicate as
        :meth:`start_flow`'s key does, as if each input were started in turn: an input whose
        key was already used for the flow gets that key's run and starts nothing, and a key
        repeated in the batch gives its later inputs the run of its first. Concurrent batches
        sharing keys make one run per key. ``idempotency_ttl`` applies to every key.
        """
        slug = flow_slug_of(flow)
        check_run_priority(priority, slug)
        datas = [run_input(data, index) for index, data in enumerate(inputs)]
        dedup = check_idempotency_keys(idempotency_keys, len(datas), idempotency_ttl)
        if not datas:
            return []
        keys = [run_keys_of(flow, data) for data in datas]
        controlled = priority is not None or any(keys)  # flow control (0060_limits.sql)
        params: dict[str, Any] = {
            "flow_slug": slug,
            "inputs": [Jsonb(data) for data in datas],
            "priority": priority,
            "keys": [Jsonb(dict(k or {})) for k in keys] if controlled else None,
            "traceparent": None,
            "tracestate": None,
        }
        name = "client.start_flows"
        if dedup is not None:  # keys reserved and new runs started together (0099)
            name = "idempotency.start_flows_idempotent"
            params.update(idempotency_keys=dedup, ttl_seconds=idempotency_ttl)
        try:
            with (
                self.connection(connection) as conn,
                run_start_span(slug, len(datas)) as span,
            ):
                if span is not None:  # every run keeps the start span's trace context
                    params.update(span.params)
                rows = conn.execute(query(name), params).fetchall()
        except DatabaseError as exc:
            raise self._start_failure(slug, exc) from exc
        return [row[1] for row in rows]

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
        :class:`RunFailed` when it failed (:class:`RunCancelled`, a kind of it, when it was
        cancelled) unless ``raise_on_failure=False``.
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
                    if run.status == "cancelled" and raise_on_failure:
                        raise RunCancelled(
                            f"run {uid} of flow {run.flow_slug!r} was cancelled: "
                            f"{run.error_message}",
                            run=run,
                        )
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
