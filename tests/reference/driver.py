"""Driving a pgflow database through its SQL functions, and observing what users and workers see.

``Db`` calls ``pgflow.<function>(name => value, ...)`` with only the arguments given (as the DSL and
``PgflowSqlClient`` do). ``observe`` takes a normalised picture of a database: runs, step states,
step tasks, live and archived queue messages (visibility as seconds from now) and the events
``realtime.send`` logged. Timestamps become ``"<ts>"`` (or None), so two databases that went through
the same calls compare equal when they behave alike.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg.types.numeric import Int4, Int8

from pgflow_kombu.db.connect import connect
from tests.support.sql import test_query

TS = "<ts>"
WORKER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
# Seconds two visibility delays may differ by and still count as the same (calls on the two
# databases happen one after the other, a few milliseconds apart).
VISIBILITY_TOLERANCE = 1.0


def normalise(value: Any) -> Any:
    """Timestamps to ``"<ts>"`` (also ISO strings under ``*_at`` keys of event payloads)."""
    if isinstance(value, datetime):
        return TS
    if isinstance(value, dict):
        return {
            k: (TS if k.endswith("_at") and v is not None else normalise(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    return value


JSON_ARGS = {"input", "output"}


def _arg(name: str, value: Any) -> Any:
    """Adapt a Python argument: JSON values as jsonb (None stays SQL NULL), msg_ids as bigint[]."""
    if value is None:
        return None
    if name in JSON_ARGS and not isinstance(value, Jsonb):
        return Jsonb(value)
    if name == "msg_ids":
        return [None if v is None else Int8(v) for v in value]
    if name == "vt_offsets":
        return [None if v is None else Int4(v) for v in value]
    return value


DIAGNOSTICS = (
    "message_primary",
    "message_detail",
    "message_hint",
    "schema_name",
    "table_name",
    "column_name",
    "datatype_name",
    "constraint_name",
)
_GENERATED = [
    (re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?[+-]\d{2}(:\d{2})?"), TS),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
]


def diagnostics(error: psycopg.Error) -> dict[str, str | None]:
    """What an error tells whoever catches it: SQLSTATE, message, detail, constraint and so on.

    Timestamps and UUIDs in the texts (a failing row's created_at, a generated run_id) are
    normalised, so the same failure on two databases gives the same diagnostics.
    """
    found: dict[str, str | None] = {"sqlstate": error.sqlstate}
    for name in DIAGNOSTICS:
        text = getattr(error.diag, name)
        for pattern, replacement in _GENERATED:
            text = text and pattern.sub(replacement, text)
        found[name] = text
    return found


def reconcile(reference: Any) -> Any:
    """The reference's results with our deliberate differences applied, for comparisons.

    The one that shows in results (tests/integration/test_differential_divergences.py lists them
    all, with reasons): a completed task keeps no error_message from an earlier attempt.
    """
    if isinstance(reference, list | tuple):
        return [reconcile(v) for v in reference]
    if not isinstance(reference, dict):
        return reference
    adjusted = {k: reconcile(v) for k, v in reference.items()}
    if adjusted.get("status") == "completed" and {"attempts_count", "error_message"} <= set(
        adjusted
    ):
        adjusted["error_message"] = None
    return adjusted


class Db:
    """One database, driven through pgflow's functions on an autocommit connection."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.conn: psycopg.Connection[dict[str, Any]] = connect(url, row_factory=dict_row)

    def close(self) -> None:
        self.conn.close()

    def call(self, function: str, /, **args: Any) -> list[dict[str, Any]]:
        """``SELECT * FROM pgflow.<function>(name => value, ...)``; input/output go as jsonb."""
        params = {k: _arg(k, v) for k, v in args.items()}
        statement = sql.SQL(test_query("sqlcore_call")).format(
            sql.Identifier(function),
            sql.SQL(", ").join(
                sql.SQL("{} => {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in params
            ),
        )
        return self.conn.execute(statement, params).fetchall()

    def execute(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        cur = self.conn.execute(test_query(name), params or {})
        return cur.fetchall() if cur.description else []

    def read(self, flow_slug: str, vt: int = 30, qty: int = 100) -> list[int]:
        rows = self.execute("sqlcore_read", {"queue": flow_slug, "vt": vt, "qty": qty})
        return [r["msg_id"] for r in rows]

    def add_worker(self, worker_id: uuid.UUID = WORKER_ID, queue: str = "any") -> None:
        self.execute("sqlcore_add_worker", {"worker_id": worker_id, "queue": queue})

    def make_visible(self, flow_slug: str) -> None:
        """Every message of the flow's queue becomes visible now (stands in for waiting)."""
        table = sql.Identifier(f"q_{flow_slug.lower()}")
        self.conn.execute(sql.SQL(test_query("sqlcore_make_visible")).format(table))

    def events(self) -> list[dict[str, Any]]:
        return [
            {"event": e["event"], "topic": e["topic"], "payload": normalise(e["payload"])}
            for e in self.execute("sqlcore_events")
        ]

    def queue(self, flow_slug: str) -> dict[str, list[dict[str, Any]]]:
        def rows(name: str, prefix: str) -> list[dict[str, Any]]:
            table = sql.Identifier(f"{prefix}_{flow_slug.lower()}")
            statement = sql.SQL(test_query(name)).format(table)
            return self.conn.execute(statement).fetchall()

        live = rows("sqlcore_queue_messages", "q")
        for message in live:
            message["visible_in"] = max(0.0, message["visible_in"])
        return {"live": live, "archived": rows("sqlcore_archived_messages", "a")}

    def observe(self) -> dict[str, Any]:
        queues = [r["queue_name"] for r in self.execute("sqlcore_flow_queues")]
        return {
            "runs": normalise(self.execute("sqlcore_runs")),
            "step_states": normalise(self.execute("sqlcore_step_states")),
            "step_tasks": normalise(self.execute("sqlcore_step_tasks")),
            "queues": {q: normalise(self.queue(q)) for q in queues},
            "events": self.events(),
        }


def assert_same(ours: Any, reference: Any, path: str = "") -> None:
    """Deep equality; floats (visibility delays) may differ by VISIBILITY_TOLERANCE."""
    if isinstance(ours, float) and isinstance(reference, float):
        assert math.isclose(ours, reference, abs_tol=VISIBILITY_TOLERANCE), (
            f"{path}: {ours} != {reference}"
        )
        return
    if isinstance(ours, dict) and isinstance(reference, dict):
        assert ours.keys() == reference.keys(), f"{path}: keys {ours.keys()} != {reference.keys()}"
        for key in ours:
            assert_same(ours[key], reference[key], f"{path}.{key}")
        return
    if isinstance(ours, list) and isinstance(reference, list):
        assert len(ours) == len(reference), (
            f"{path}: {len(ours)} items != {len(reference)} items\nours: {ours}\nref:  {reference}"
        )
        for i, (a, b) in enumerate(zip(ours, reference, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
        return
    assert ours == reference, f"{path}: ours {ours!r} != reference {reference!r}"


class Pair:
    """The same calls on our schema and on the reference schema, compared as they go."""

    def __init__(self, ours: Db, reference: Db) -> None:
        self.ours = ours
        self.reference = reference

    @property
    def both(self) -> tuple[Db, Db]:
        return self.ours, self.reference

    def call(self, function: str, /, *, sort_by: str | None = None, **args: Any) -> list[Any]:
        """Call on both; the (normalised) results must match. Returns ours."""
        results = []
        for db in self.both:
            rows = db.call(function, **args)
            if sort_by is not None:
                rows.sort(key=lambda r: r[sort_by])
            results.append(rows)
        assert_same(normalise(results[0]), reconcile(normalise(results[1])), function)
        return results[0]

    def execute(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        results = [db.execute(name, params) for db in self.both]
        assert_same(normalise(results[0]), reconcile(normalise(results[1])), name)
        return results[0]

    def read(self, flow_slug: str, vt: int = 30, qty: int = 100) -> list[int]:
        ids = [db.read(flow_slug, vt=vt, qty=qty) for db in self.both]
        assert ids[0] == ids[1], f"read {flow_slug}: ours {ids[0]} != reference {ids[1]}"
        return ids[0]

    def start_tasks(self, flow_slug: str, msg_ids: list[int]) -> list[dict[str, Any]]:
        return self.call(
            "start_tasks",
            sort_by="msg_id",
            flow_slug=flow_slug,
            msg_ids=msg_ids,
            worker_id=WORKER_ID,
        )

    def claim(self, flow_slug: str, vt: int = 30) -> list[dict[str, Any]]:
        """Read every visible message of the queue and start its tasks (as a worker does)."""
        return self.start_tasks(flow_slug, self.read(flow_slug, vt=vt))

    def complete(self, task: dict[str, Any], output: Any) -> list[dict[str, Any]]:
        return self.call(
            "complete_task",
            run_id=task["run_id"],
            step_slug=task["step_slug"],
            task_index=task["task_index"],
            output=output,
        )

    def fail(self, task: dict[str, Any], error: str) -> list[dict[str, Any]]:
        return self.call(
            "fail_task",
            run_id=task["run_id"],
            step_slug=task["step_slug"],
            task_index=task["task_index"],
            error_message=error,
        )

    def add_worker(self) -> None:
        for db in self.both:
            db.add_worker()

    def make_visible(self, flow_slug: str) -> None:
        for db in self.both:
            db.make_visible(flow_slug)

    def assert_same_state(self) -> dict[str, Any]:
        """Everything observable matches (up to :func:`reconcile`); returns our observation."""
        ours, reference = self.ours.observe(), reconcile(self.reference.observe())
        for part in ours:
            assert_same(ours[part], reference[part], part)
        from tests.reference.invariants import assert_invariants

        for db in self.both:
            assert_invariants(db.conn)
        return ours
