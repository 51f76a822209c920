"""The counters and statuses pgflow's functions keep, checked over a whole database.

pgflow 0.8.1 never recounts: remaining_steps, remaining_deps and remaining_tasks are changed
step by step by complete_task, and every later decision (start a step, complete the run) reads
them. Anything that changes a run outside those functions (cancel, retry, delete, prune) must
leave them as those functions would have. :func:`violations` lists what does not hold.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.rows import tuple_row

from tests.support.sql import test_query

__all__ = ["assert_invariants", "violations"]

CHECKS = ("inv_remaining_steps", "inv_remaining_deps", "inv_remaining_tasks", "inv_statuses")


def violations(conn: Any) -> list[tuple[str, Any]]:
    """Every broken invariant as (check, row); empty when the database is consistent."""
    found: list[tuple[str, Any]] = []
    with conn.cursor(row_factory=tuple_row) as cur:
        # A skipped step reads completed in pgflow's row while its tasks failed (see
        # 0070_conditions.sql): its tasks are not counted against it.
        skipped = set()
        if cur.execute(test_query("has_skipped_steps")).fetchone() == (True,):
            skipped = {tuple(r) for r in cur.execute(test_query("skipped_steps")).fetchall()}
        for name in CHECKS:
            rows = cur.execute(test_query(name)).fetchall()
            found += [(name, row) for row in rows if tuple(row[:2]) not in skipped]
        for (slug,) in cur.execute(test_query("flow_slugs")).fetchall():
            table = sql.Identifier(f"q_{slug.lower()}")
            statement = sql.SQL(test_query("inv_messages")).format(table, table)
            found += [("inv_messages", r) for r in cur.execute(statement, {"flow_slug": slug})]
    return found


def assert_invariants(conn: Any) -> None:
    broken = violations(conn)
    assert not broken, "invariants broken:\n" + "\n".join(f"  {c}: {r}" for c, r in broken)
