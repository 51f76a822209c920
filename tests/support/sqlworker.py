"""Drives pgflow runs with plain SQL calls (read, start_tasks, complete_task / fail_task)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from psycopg.types.json import Jsonb

from pgflow_kombu.db.connect import connect
from tests.support.sql import test_query

Handler = Callable[[str, Any], Any]


def drain(url: str, queue: str, handler: Handler, *, rounds: int = 50) -> int:
    """Run every visible task of ``queue`` through ``handler(step_slug, input)`` until none is left.

    A handler that raises fails the task with the exception's text. Returns the tasks handled.
    """
    worker_id = uuid.uuid4()
    handled = 0
    with connect(url) as conn:
        conn.execute(test_query("sqlworker_register"), {"worker_id": worker_id, "queue": queue})
        for _ in range(rounds):
            msg_ids = [r[0] for r in conn.execute(test_query("sqlworker_read"), {"queue": queue})]
            if not msg_ids:
                return handled
            tasks = conn.execute(
                test_query("sqlworker_claim"),
                {"queue": queue, "msg_ids": msg_ids, "worker_id": worker_id},
            ).fetchall()
            for run_id, step_slug, task_index, task_input in tasks:
                where = {"run_id": run_id, "step_slug": step_slug, "task_index": task_index}
                try:
                    output = handler(step_slug, task_input)
                except Exception as exc:
                    conn.execute(test_query("sqlworker_fail"), {**where, "error": str(exc)})
                else:
                    conn.execute(
                        test_query("sqlworker_complete"), {**where, "output": Jsonb(output)}
                    )
                handled += 1
    return handled


def queue_messages(url: str, queue: str) -> list[tuple[Any, ...]]:
    """Every message in ``queue``, visible or not: (msg_id, message, read_ct, seconds until visible)."""
    from psycopg import sql

    with connect(url) as conn:
        return conn.execute(
            sql.SQL(test_query("queue_messages")).format(sql.Identifier(f"q_{queue}"))
        ).fetchall()
