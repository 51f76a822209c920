"""Figures for operating the system (what the dashboard shows): runs per minute, failing flows,
runs by status with bounded counts, step duration percentiles, queue depths, workers with the
tasks they hold. (Pages of runs are the runs API's ``find_runs``.)

Each reads an index range (``sql/migrations/0045_runs_api.sql`` and ``0085_dashboard.sql``):
none counts every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from uuid import UUID

from psycopg.rows import dict_row

from pgflow_kombu.client.base import ClientBase
from pgflow_kombu.db.queries import query

__all__ = [
    "InsightsMixin",
    "MinuteCounts",
    "QueueDepth",
    "StepDurations",
    "WorkerActivity",
]


@dataclass(frozen=True)
class MinuteCounts:
    minute: datetime
    started: int = 0
    completed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class QueueDepth:
    flow_slug: str
    visible: int
    oldest_age: float | None
    """Seconds since the oldest visible message was sent (None when none is visible)."""


@dataclass(frozen=True)
class StepDurations:
    step_slug: str
    tasks: int
    p50: float
    p95: float
    p99: float
    max: float


@dataclass(frozen=True)
class WorkerActivity:
    worker_id: UUID
    queue_name: str
    function_name: str
    started_at: datetime
    last_heartbeat_at: datetime
    deprecated_at: datetime | None
    in_flight: int

    @property
    def kind(self) -> str:
        """``python`` for pgflow-kombu's workers, else ``typescript`` (pgflow's edge worker)."""
        return "python" if self.function_name.startswith("pgflow-kombu:") else "typescript"

    @property
    def host_pid(self) -> tuple[str | None, int | None]:
        """Host and pid, as pgflow-kombu's workers write them in ``function_name``."""
        parts = self.function_name.split(":")
        if len(parts) == 3 and parts[0] == "pgflow-kombu" and parts[2].isdigit():
            return parts[1], int(parts[2])
        return None, None


class InsightsMixin(ClientBase):
    def runs_per_minute(self, *, minutes: int = 60) -> list[MinuteCounts]:
        """Runs started, completed and failed in each of the last ``minutes`` minutes (oldest
        first, the current minute last, zeros included)."""
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        first = now - timedelta(minutes=minutes - 1)
        counts: dict[datetime, dict[str, int]] = {
            first + timedelta(minutes=i): {} for i in range(minutes)
        }
        with self.connection() as conn:
            rows = conn.execute(query("insights.runs_per_minute"), {"since": first}).fetchall()
        for minute, kind, n in rows:
            bucket = counts.get(minute.astimezone(timezone.utc))
            if bucket is not None:
                bucket[kind] = n
        return [MinuteCounts(minute, **c) for minute, c in counts.items()]

    def failing_flows(self, *, since: datetime, limit: int = 5) -> list[tuple[str, int]]:
        """Flows with the most runs failed since ``since``, most first."""
        params = {"since": since, "limit": limit}
        with self.connection() as conn:
            rows = conn.execute(query("insights.failing_flows"), params).fetchall()
        return [(slug, n) for slug, n in rows]

    def flow_status_counts(
        self, flow_slug: str, *, since: datetime, cap: int = 10_000
    ) -> dict[str, int]:
        """The flow's runs started since ``since`` by status (``started``, ``completed``,
        ``failed``, ``cancelled``), each count stopping at ``cap`` (a count equal to ``cap``
        means "at least"), so the cost stays bounded however many runs the window holds."""
        params = {"flow_slug": flow_slug, "since": since, "cap": cap}
        with self.connection() as conn:
            rows = conn.execute(query("insights.flow_status_counts"), params).fetchall()
        counts = {status: n for status, n in rows}
        if counts["failed"] < cap:  # a cancelled run's pgflow row says failed
            counts["failed"] = max(counts["failed"] - counts["cancelled"], 0)
        return counts

    def step_durations(self, flow_slug: str, *, since: datetime) -> list[StepDurations]:
        """Run time percentiles (seconds) of the flow's tasks completed since ``since``."""
        params = {"flow_slug": flow_slug, "since": since}
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("insights.step_durations"), params).fetchall()
        return [StepDurations(**r) for r in rows]

    def queue_depths(self) -> list[QueueDepth]:
        """Visible messages and the oldest one's age, per flow queue."""
        with self.connection() as conn:
            rows = conn.execute(query("observability.queue_depths")).fetchall()
        return [QueueDepth(*r) for r in rows]

    def worker_activity(self, *, since: datetime, limit: int = 200) -> list[WorkerActivity]:
        """Workers (Python and TypeScript) that heartbeated since ``since``, newest first, each
        with the number of tasks it holds now."""
        params = {"since": since, "limit": limit}
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("insights.worker_activity"), params).fetchall()
        return [WorkerActivity(**r) for r in rows]
