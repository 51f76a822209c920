"""Workers and health: who serves the database, and whether it answers."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from pgflow_kombu.client.base import CORE_VERSION, ClientBase
from pgflow_kombu.db.queries import query
from pgflow_kombu.settings import WORKER_DEFAULTS
from pgflow_kombu.types import WorkerInfo

__all__ = ["WorkersMixin"]


class WorkersMixin(ClientBase):
    def list_workers(
        self, *, include_stale: bool = False, stale_after: float = WORKER_DEFAULTS.stalled_after
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
