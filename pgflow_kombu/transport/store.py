"""The transport's SQL: named queries of ``sql/queries/transport.sql`` run on a given connection.

Queries on a queue table are composed once per table (``psycopg.sql.Identifier``) and cached as
bytes; psycopg then prepares them server-side after a few executions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import psycopg
from psycopg import sql

from pgflow_kombu.db.queries import query

__all__ = [
    "Connection",
    "Row",
    "add_consumer",
    "all_bindings",
    "archive",
    "bind",
    "declare_exchange",
    "delete",
    "delete_exchange",
    "delete_queue",
    "ensure_queue",
    "exchange_bindings",
    "exchange_in_use",
    "exchange_type",
    "extend",
    "listen",
    "make_visible",
    "publish",
    "purge",
    "put",
    "queue_exists",
    "queue_record",
    "read",
    "record_queue",
    "remove_consumer",
    "size",
    "sweep",
    "touch_queue",
    "unbind",
    "unlisten",
]

Connection = psycopg.Connection[Any]
Row = tuple[int, int | None, str | None]  # msg_id, read_ct (None: expired, dropped), message


@cache
def _on_table(name: str, table: str) -> bytes:
    return sql.SQL(query(f"transport.{name}")).format(table=sql.Identifier(table)).as_bytes(None)


@cache
def _on_channel(name: str, channel: str) -> bytes:
    return (
        sql.SQL(query(f"transport.{name}")).format(channel=sql.Identifier(channel)).as_bytes(None)
    )


def put(conn: Connection, table: str, message: str, delay: float) -> None:
    conn.execute(_on_table("put", table), {"delay": delay, "message": message})


def publish(conn: Connection, exchange: str, routing_key: str, message: str, delay: float) -> int:
    row = conn.execute(
        query("transport.publish"),
        {"exchange": exchange, "routing_key": routing_key, "message": message, "delay": delay},
    ).fetchone()
    return int(row[0]) if row else 0


def read(
    conn: Connection,
    table: str,
    *,
    limit: int,
    visibility_timeout: float,
    ttl_ms: float | None,
    pop: bool,
) -> list[Row]:
    cur = conn.execute(
        _on_table("pop" if pop else "read", table),
        {"limit": limit, "vt": visibility_timeout, "ttl_ms": ttl_ms},
    )
    return cur.fetchall()


def delete(conn: Connection, table: str, ids: Sequence[int]) -> None:
    conn.execute(_on_table("delete", table), {"ids": list(ids)})


def archive(conn: Connection, pgmq_queue: str, ids: Sequence[int]) -> None:
    conn.execute(query("transport.archive"), {"queue": pgmq_queue, "ids": list(ids)})


def make_visible(conn: Connection, table: str, ids: Sequence[int]) -> None:
    conn.execute(_on_table("make_visible", table), {"ids": list(ids)})


def extend(conn: Connection, table: str, ids: Sequence[int], visibility_timeout: float) -> None:
    conn.execute(_on_table("extend", table), {"ids": list(ids), "vt": visibility_timeout})


def purge(conn: Connection, table: str) -> int:
    return conn.execute(_on_table("purge", table)).rowcount


def size(conn: Connection, table: str) -> int:
    row = conn.execute(_on_table("size", table)).fetchone()
    return int(row[0]) if row else 0


def queue_exists(conn: Connection, table: str) -> bool:
    qualified = sql.Identifier("pgmq", table).as_string(None)
    row = conn.execute(query("transport.queue_exists"), {"qualified": qualified}).fetchone()
    return bool(row and row[0])


def ensure_queue(conn: Connection, pgmq_queue: str) -> None:
    conn.execute(query("transport.ensure_queue"), {"pgmq_name": pgmq_queue})


def record_queue(
    conn: Connection,
    name: str,
    pgmq_queue: str,
    auto_delete: bool,
    arguments: Mapping[str, Any],
    expires_ms: float | None,
) -> None:
    conn.execute(
        query("transport.record_queue"),
        {
            "name": name,
            "pgmq_name": pgmq_queue,
            "auto_delete": auto_delete,
            "arguments": json.dumps(dict(arguments), default=str),
            "expires_ms": expires_ms,
        },
    )


def queue_record(conn: Connection, name: str) -> tuple[bool, dict[str, Any]] | None:
    row = conn.execute(query("transport.queue_record"), {"name": name}).fetchone()
    return None if row is None else (bool(row[0]), dict(row[1] or {}))


def delete_queue(conn: Connection, name: str, pgmq_queue: str, *, if_unused: bool = False) -> bool:
    """Delete a queue with its bindings; False when ``if_unused`` kept it (a live consumer)."""
    cur = conn.execute(
        query("transport.delete_queue"),
        {"name": name, "pgmq_name": pgmq_queue, "if_unused": if_unused},
    )
    return cur.fetchone() is not None


def touch_queue(conn: Connection, name: str, slack_ms: float) -> None:
    """The queue was used (basic_get): an expiring queue lives its x-expires (+ ``slack_ms``)
    again."""
    conn.execute(query("transport.touch_queue"), {"name": name, "slack_ms": slack_ms})


def add_consumer(conn: Connection, name: str, pgmq_queue: str, owner: str, pid: int) -> None:
    """Register a consumer of ``name`` that lives as long as the backend ``pid``."""
    conn.execute(
        query("transport.add_consumer"),
        {"name": name, "pgmq_name": pgmq_queue, "owner": owner, "pid": pid},
    )


def remove_consumer(conn: Connection, name: str, owner: str) -> bool:
    """Unregister a consumer; True when the queue went with it (auto-delete, last consumer)."""
    row = conn.execute(
        query("transport.remove_consumer"), {"name": name, "owner": owner}
    ).fetchone()
    return bool(row and row[0])


def sweep(conn: Connection) -> list[str]:
    """Forget consumers whose connection is gone, delete the queues whose time has come; return
    the names of the queues deleted."""
    return [str(row[0]) for row in conn.execute(query("transport.sweep")).fetchall()]


def declare_exchange(
    conn: Connection,
    name: str,
    kind: str,
    *,
    durable: bool,
    auto_delete: bool,
    arguments: Mapping[str, Any],
) -> str:
    row = conn.execute(
        query("transport.declare_exchange"),
        {
            "name": name,
            "type": kind,
            "durable": durable,
            "auto_delete": auto_delete,
            "arguments": json.dumps(dict(arguments), default=str),
        },
    ).fetchone()
    return str(row[0]) if row else kind


def exchange_type(conn: Connection, name: str) -> str | None:
    row = conn.execute(query("transport.exchange_type"), {"name": name}).fetchone()
    return None if row is None else str(row[0])


def delete_exchange(conn: Connection, name: str) -> None:
    conn.execute(query("transport.delete_exchange"), {"name": name})


def exchange_in_use(conn: Connection, name: str) -> bool:
    row = conn.execute(query("transport.exchange_in_use"), {"name": name}).fetchone()
    return bool(row and row[0])


def bind(
    conn: Connection,
    *,
    exchange: str,
    routing_key: str,
    queue: str,
    pgmq_queue: str,
    pattern: str,
    arguments: Mapping[str, Any],
) -> None:
    conn.execute(
        query("transport.bind"),
        {
            "exchange": exchange,
            "routing_key": routing_key,
            "queue": queue,
            "pgmq_name": pgmq_queue,
            "pattern": pattern,
            "arguments": json.dumps(dict(arguments), default=str),
        },
    )


def unbind(conn: Connection, *, exchange: str, routing_key: str, queue: str) -> None:
    conn.execute(
        query("transport.unbind"),
        {"exchange": exchange, "routing_key": routing_key, "queue": queue},
    )


def exchange_bindings(conn: Connection, exchange: str) -> list[tuple[str, str, str]]:
    return conn.execute(query("transport.exchange_bindings"), {"exchange": exchange}).fetchall()


def all_bindings(conn: Connection) -> list[tuple[str, str, str]]:
    return conn.execute(query("transport.all_bindings")).fetchall()


def listen(conn: Connection, channel: str) -> None:
    conn.execute(_on_channel("listen", channel))


def unlisten(conn: Connection, channel: str) -> None:
    conn.execute(_on_channel("unlisten", channel))
