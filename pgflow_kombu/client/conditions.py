"""Conditional steps in the database: written when a flow is compiled, read back with its shape.

Conditions live in the table ``pgflow_kombu.step_conditions`` (sql/migrations/0070_conditions.sql),
keyed by ``(flow_slug, step_slug)``; pgflow's functions on our schema evaluate them. pgflow's functions as
upstream's tools install them cannot, so a conditional flow is refused there.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import FlowDefinitionError
from pgflow_kombu.flows.conditions import ConditionShape
from pgflow_kombu.flows.shapes import FlowShape

__all__ = ["read_conditions", "write_conditions"]


def write_conditions(conn: psycopg.Connection[Any], shape: FlowShape) -> None:
    """Record the condition of each conditional step (after its ``pgflow.add_step``).

    Raises :class:`FlowDefinitionError` on a database whose pgflow functions are upstream's.
    """
    conditional = [s for s in shape["steps"] if s.get("condition")]
    if not conditional:
        return
    row = conn.execute(query("client.conditions_supported")).fetchone()
    if not (row and row[0]):
        slugs = ", ".join(s["slug"] for s in conditional)
        raise FlowDefinitionError(
            f"flow {shape['flow_slug']!r}: steps {slugs} have conditions (if_/if_not/when_unmet/"
            "when_exhausted), but this database's pgflow functions were installed by pgflow's "
            "own tools (0.8.1) and cannot evaluate them. Use a database whose pgflow schema "
            "pgflow-kombu installed, or remove the conditions.",
            flow_slug=shape["flow_slug"],
        )
    for step in conditional:
        condition = step["condition"]
        conn.execute(
            query("client.set_step_condition"),
            {
                "flow_slug": shape["flow_slug"],
                "step_slug": step["slug"],
                "if_pattern": _jsonb(condition.get("if_")),
                "if_not_pattern": _jsonb(condition.get("if_not")),
                "when_unmet": condition.get("when_unmet", "skip"),
                "when_exhausted": condition.get("when_exhausted", "fail"),
            },
        )


def read_conditions(conn: psycopg.Connection[Any], slug: str) -> dict[str, ConditionShape]:
    """The conditions the database holds for a flow's steps, by step slug."""
    rows = conn.execute(query("client.get_step_conditions"), {"flow_slug": slug}).fetchall()
    return {
        step_slug: {
            "if_": if_pattern,
            "if_not": if_not_pattern,
            "when_unmet": when_unmet,
            "when_exhausted": when_exhausted,
        }
        for step_slug, if_pattern, if_not_pattern, when_unmet, when_exhausted in rows
    }


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)
