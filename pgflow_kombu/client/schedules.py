"""Schedules in the database: write them (from code or by hand), list, pause, resume, trigger.

The workers fire them (``pgflow_kombu.worker.scheduler``). Schedules defined in code are written
by :meth:`SchedulesMixin.sync_schedules` when a worker starts; one the code no longer defines is
disabled (status ``removed``), not deleted, so a rolling deploy where old workers still run
keeps its pause state and tick history, and a later version that defines it again re-enables
it. Schedules made with :meth:`SchedulesMixin.create_schedule` are the client's own: workers
never disable them; :meth:`SchedulesMixin.delete_schedule` removes either kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from typing_extensions import Unpack

from pgflow_kombu.client.base import ClientBase, FlowRef, flow_slug_of
from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import ScheduleNotFound
from pgflow_kombu.flows.keywords import ScheduleKeywords, schedule_spec_of
from pgflow_kombu.flows.schedules import ScheduleSpec, next_tick
from pgflow_kombu.types import ScheduleInfo, ScheduleTick

__all__ = ["SchedulesMixin", "write_schedule"]


def write_schedule(conn: psycopg.Connection[Any], spec: ScheduleSpec, source: str) -> None:
    """Insert or update one schedule (``source`` 'code' or 'api'); keeps its pause state."""
    now: datetime = conn.execute(query("schedules.db_now")).fetchone()[0]  # type: ignore[index]
    conn.execute(
        query("schedules.upsert_schedule"),
        {
            "name": spec.name,
            "flow_slug": spec.flow_slug,
            "cron": spec.cron,
            "timezone": spec.timezone,
            "input": Jsonb(spec.input),
            "catch_up": spec.catch_up,
            "catch_up_limit": spec.catch_up_limit,
            "misfire_grace": float(spec.misfire_grace),
            "source": source,
            "next_tick_at": spec.next_tick(now),
        },
    )


def sync_code_schedules(
    conn: psycopg.Connection[Any], specs: Sequence[ScheduleSpec], flow_slugs: Iterable[str]
) -> list[str]:
    """Write ``specs`` and disable the code schedules of ``flow_slugs`` not among them, in one
    transaction; returns the names disabled."""
    with conn.transaction():
        for spec in specs:
            write_schedule(conn, spec, "code")
        rows = conn.execute(
            query("schedules.disable_removed_schedules"),
            {"flow_slugs": sorted(set(flow_slugs)), "names": [s.name for s in specs]},
        ).fetchall()
    return sorted(r[0] for r in rows)


class SchedulesMixin(ClientBase):
    def sync_schedules(
        self, specs: Sequence[ScheduleSpec], *, flows: Iterable[FlowRef] | None = None
    ) -> list[str]:
        """Write code-defined schedules; disable the code schedules of ``flows`` (default: the
        flows of ``specs``) that ``specs`` no longer hold. Returns the names disabled."""
        slugs = [flow_slug_of(f) for f in flows] if flows is not None else []
        slugs += [s.flow_slug for s in specs]
        with self.connection() as conn:
            return sync_code_schedules(conn, specs, slugs)

    def create_schedule(
        self, flow: FlowRef, cron: str, **options: Unpack[ScheduleKeywords]
    ) -> ScheduleInfo:
        """Create (or update) a schedule of any flow in the database, not tied to code."""
        spec = schedule_spec_of(flow_slug_of(flow), cron, options, "create_schedule()")
        with self.connection() as conn, conn.transaction():
            write_schedule(conn, spec, "api")
        return self.get_schedule(spec.name)

    def list_schedules(self, *, flow_slug: str | None = None) -> list[ScheduleInfo]:
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("schedules.list_schedules"), {"flow_slug": flow_slug})
            return [ScheduleInfo.model_validate(r) for r in rows.fetchall()]

    def get_schedule(self, name: str) -> ScheduleInfo:
        """The schedule named ``name``; raises :class:`ScheduleNotFound`."""
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(query("schedules.get_schedule"), {"name": name}).fetchone()
        if row is None:
            raise ScheduleNotFound(f"no schedule named {name!r}")
        return ScheduleInfo.model_validate(row)

    def pause_schedule(self, name: str) -> None:
        """Stop starting ticks (a manual trigger still works); raises ScheduleNotFound."""
        with self.connection() as conn:
            if conn.execute(query("schedules.pause_schedule"), {"name": name}).fetchone() is None:
                raise ScheduleNotFound(f"no schedule named {name!r}")

    def resume_schedule(self, name: str) -> ScheduleInfo:
        """Start ticking again from the next tick after now: ticks due during the pause are not
        caught up, whatever the catch-up policy. Returns the schedule."""
        with self.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            row = cur.execute(query("schedules.lock_schedule"), {"name": name}).fetchone()
            if row is None:
                raise ScheduleNotFound(f"no schedule named {name!r}")
            now = conn.execute(query("schedules.db_now")).fetchone()[0]
            conn.execute(
                query("schedules.resume_schedule"),
                {"name": name, "next_tick_at": next_tick(row["cron"], row["timezone"], now)},
            )
        return self.get_schedule(name)

    def trigger_schedule(self, name: str) -> UUID:
        """Start a run of the schedule now (also when paused); returns its run id."""
        with self.connection() as conn, conn.transaction():
            if conn.execute(query("schedules.get_schedule"), {"name": name}).fetchone() is None:
                raise ScheduleNotFound(f"no schedule named {name!r}")
            now = conn.execute(query("schedules.clock_now")).fetchone()[0]
            row = conn.execute(
                query("schedules.start_tick"), {"name": name, "tick_at": now, "manual": True}
            ).fetchone()
        assert row is not None and row[0] is not None
        run_id: UUID = row[0]
        return run_id

    def delete_schedule(self, name: str) -> None:
        """Delete a schedule and its tick history (its runs stay); raises ScheduleNotFound."""
        with self.connection() as conn:
            if conn.execute(query("schedules.delete_schedule"), {"name": name}).fetchone() is None:
                raise ScheduleNotFound(f"no schedule named {name!r}")

    def schedule_ticks(self, name: str, *, limit: int = 100) -> list[ScheduleTick]:
        """The newest started ticks of a schedule, newest first."""
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("schedules.list_ticks"), {"name": name, "limit": limit})
            return [ScheduleTick.model_validate(r) for r in rows.fetchall()]
