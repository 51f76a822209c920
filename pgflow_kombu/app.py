"""``PgFlow``: the application object users create once and import everywhere.

It holds the settings, a registry of the flows and tasks defined through it, and is the facade
over the client (start, read and wait for runs; manage flows) and the worker. Several apps in one
process share nothing. No database is touched until a run is started or a worker runs; creating
an app never starts a server.

Its methods come by concept from ``app_flows`` (defining flows and tasks), ``app_runs`` (runs),
``app_schedules`` (schedules) and ``app_workers`` (workers and health), over ``app_base`` (the
settings, the registry of flows and the client).
"""

from __future__ import annotations

from pgflow_kombu.app_flows import FlowsFacade
from pgflow_kombu.app_runs import RunsFacade
from pgflow_kombu.app_schedules import SchedulesFacade
from pgflow_kombu.app_workers import WorkersFacade

__all__ = ["PgFlow"]


class PgFlow(FlowsFacade, RunsFacade, SchedulesFacade, WorkersFacade):
    """An application: ``app = PgFlow()`` reads ``PGFLOW_DATABASE_URL``; or pass ``database_url``.

    ``eager=True`` runs every started flow in the calling process, with no worker and no
    database (for tests): handles (the same :class:`RunHandle` type) come back already finished.
    Eager runs validate inputs and outputs, retry failed tasks up to ``max_attempts`` (without
    waiting out the backoff), take ``run_id`` and ``idempotency_key`` (kept in memory), and
    raise :class:`ConfigurationError` for what they cannot honour: ``connection=`` and delays
    (``countdown``/``eta``/``enqueue_in``) into the future.
    """

    def close(self) -> None:
        """Stop this app's workers, if any, and close connections."""
        self.stop_worker()
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
