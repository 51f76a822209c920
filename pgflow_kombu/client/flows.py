"""Flow definitions in the database: read, compile, replace (upsert) and delete them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from typing_extensions import Unpack

from pgflow_kombu.client.base import ClientBase
from pgflow_kombu.client.conditions import read_conditions, write_conditions
from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import FlowDefinitionError, FlowNotFound
from pgflow_kombu.flows.definitions import define_flow
from pgflow_kombu.flows.flow import Flow
from pgflow_kombu.flows.keywords import FlowDataKeywords
from pgflow_kombu.flows.options import FlowOptions, StepOptions
from pgflow_kombu.flows.shapes import FlowShape, StepShape, compare_shapes
from pgflow_kombu.types import FlowInfo

LimitRows = Mapping[str, Mapping[str, Any]]
"""A flow's limits by scope (``""``: the flow, else a step slug), as ``Flow.limit_rows`` gives."""

__all__ = [
    "FlowsMixin",
    "LimitRows",
    "check_shape_options",
    "create_flow_from_shape",
    "lock_flow_slug",
    "read_flow_shape",
    "store_limits",
    "upsert_outcome",
    "write_limits",
]


class FlowsMixin(ClientBase):
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
        self,
        shape: FlowShape,
        *,
        limits: LimitRows | None = None,
        connection: psycopg.Connection[Any] | None = None,
    ) -> bool:
        """Create a flow and its steps from plain data, in one transaction; False (nothing
        written) when the slug exists already, e.g. created meanwhile by another process.

        ``limits`` (what :meth:`Flow.limit_rows` returns) are stored in the same transaction,
        so runs started before any worker serves the flow are admitted by them."""
        with self.connection(connection) as conn, conn.transaction():
            lock_flow_slug(conn, shape["flow_slug"])
            row = conn.execute(query("client.flow_exists"), {"flow_slug": shape["flow_slug"]})
            if row.fetchone() == (True,):
                return False
            create_flow_from_shape(conn, shape)
            write_limits(conn, shape["flow_slug"], limits)
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

    def replace_flow(
        self, shape: FlowShape, *, limits: LimitRows | None = None
    ) -> FlowShape | None:
        """Destructive recompile: delete ``shape``'s slug (runs included), then create it anew
        with ``limits`` (what :meth:`Flow.limit_rows` returns; None: no limits, stored ones
        are removed), in one transaction.

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
            write_limits(conn, shape["flow_slug"], limits)
        return before

    def upsert_flow(
        self,
        slug: str,
        *,
        steps: Sequence[Mapping[str, Any]],
        **options: Unpack[FlowDataKeywords],
    ) -> dict[str, Any]:
        """(Re)compile a flow from plain data. Destructive for an existing slug: its definition,
        runs, tasks and queued messages are deleted first.

        Each step is a mapping with ``slug`` (required), ``deps`` (default ``[]``), ``step_type``
        (``"single"``, the default, or ``"map"``) and optional ``max_attempts``, ``base_delay``,
        ``timeout`` and ``start_delay``, and limits ``max_concurrency``, ``rate_limit``,
        ``concurrency_key`` (see :func:`~pgflow_kombu.flows.define_flow`); the flow's own limits
        and ``priority`` are keywords. The limits are stored with the definition, in its
        transaction (limits no longer declared are removed). Options
        left out take pgflow 0.8.1's defaults (``create_flow``: max_attempts 3, base_delay 5,
        timeout 60), not the Elixir port's (whose docs say base_delay 1), so that a flow
        compiled here matches one compiled by pgflow's own tools.

        Returns ``{"status": "compiled", "differences": []}`` for a new flow, and
        ``{"status": "recompiled", "differences": [...]}`` for a replaced one, listing how the
        stored definition differed. The whole replacement runs in one transaction holding a
        transaction-level advisory lock on the slug: concurrent upserts of one slug leave
        exactly one of their definitions.
        """
        flow = define_flow(slug, steps=steps, **options)
        shape = flow.shape()
        return upsert_outcome(self.replace_flow(shape, limits=flow.limit_rows()), shape)


def upsert_outcome(before: FlowShape | None, shape: FlowShape) -> dict[str, Any]:
    """What an upsert returns: compiled (no flow ``before``) or recompiled, with how ``before``
    differed from ``shape``."""
    if before is None:
        return {"status": "compiled", "differences": []}
    return {
        "status": "recompiled",
        "differences": [str(d) for d in compare_shapes(before, shape)],
    }


def read_flow_shape(conn: psycopg.Connection[Any], slug: str) -> FlowShape:
    with conn.cursor(row_factory=dict_row) as cur:
        flow = cur.execute(query("client.get_flow"), {"flow_slug": slug}).fetchone()
        if flow is None:
            raise FlowNotFound(f"no flow {slug!r} in the database")
        steps = cur.execute(query("client.get_flow_steps"), {"flow_slug": slug}).fetchall()
    conditions = read_conditions(conn, slug)
    return {
        "flow_slug": slug,
        "options": {
            "max_attempts": flow["opt_max_attempts"],
            "base_delay": flow["opt_base_delay"],
            "timeout": flow["opt_timeout"],
        },
        "steps": [_step_shape(s, conditions) for s in steps],
    }


def store_limits(conn: psycopg.Connection[Any], flow: Any) -> None:
    """Write a flow object's limits (``Flow.limit_rows``) into ``pgflow_kombu.flow_limits``,
    replacing what was stored (sql/migrations/0060_limits.sql)."""
    write_limits(conn, flow.slug, flow.limit_rows())


def write_limits(conn: psycopg.Connection[Any], slug: str, limits: LimitRows | None) -> None:
    """Replace the stored limits of ``slug`` with ``limits`` (None or empty: none)."""
    conn.execute(
        query("client.set_flow_limits"), {"flow_slug": slug, "limits": Jsonb(dict(limits or {}))}
    )


def _step_shape(row: Mapping[str, Any], conditions: Mapping[str, Any]) -> StepShape:
    shape: StepShape = {
        "slug": row["step_slug"],
        "deps": list(row["deps"]),
        "step_type": row["step_type"],
        "options": {
            key: row[f"opt_{key}"]
            for key in ("max_attempts", "base_delay", "timeout", "start_delay")
            if row[f"opt_{key}"] is not None
        },
    }
    if row["step_slug"] in conditions:
        shape["condition"] = conditions[row["step_slug"]]
    return shape


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
    write_conditions(conn, shape)


def check_shape_options(shape: FlowShape) -> None:
    """Raise :class:`FlowDefinitionError` for an option of the shape out of its column's range."""
    slug = shape["flow_slug"]
    try:
        FlowOptions(**shape["options"]).validate(slug)
        for step in shape["steps"]:
            StepOptions(**step["options"]).validate(slug, step["slug"])
    except TypeError as exc:  # an unknown option name
        raise FlowDefinitionError(f"flow {slug!r}: {exc}", flow_slug=slug) from None
