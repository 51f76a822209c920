"""The app's workers: embedded workers started and stopped by flow, the workers the database
knows, and health."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

from pgflow_kombu.app_base import AppBase
from pgflow_kombu.client import CORE_VERSION, FlowRef, flow_slug_of
from pgflow_kombu.errors import ConfigurationError, WorkerNotFound
from pgflow_kombu.types import WorkerInfo

if TYPE_CHECKING:
    from pgflow_kombu.worker import Worker

__all__ = ["WorkersFacade"]


class WorkersFacade(AppBase):
    """Workers serving the app's flows from this process, and the database's view of workers."""

    # -- workers and health ----------------------------------------------------------------------

    @overload
    def start_worker(self, flow: FlowRef, /, **options: Any) -> Worker: ...

    @overload
    def start_worker(
        self, flow: None = None, /, *, flows: Sequence[FlowRef] | None = None, **options: Any
    ) -> dict[str, Worker]: ...

    def start_worker(
        self,
        flow: FlowRef | None = None,
        /,
        *,
        flows: Sequence[FlowRef] | None = None,
        **options: Any,
    ) -> Worker | dict[str, Worker]:
        """Serve flows from background threads of this process; one worker per flow.

        ``start_worker(flow)`` returns that flow's :class:`~pgflow_kombu.worker.Worker`; when the
        flow already has a running one it is returned as is (``options`` then change nothing).
        ``start_worker()`` does the same for every registered flow (``flows=[...]`` for some)
        and returns the workers by flow slug.

        Every flow gets a worker of its own (its own pool of ``concurrency`` slots, connections,
        heartbeat thread and ``pgflow.workers`` row), so that :meth:`stop_worker` can stop one
        flow's work and leave the others running. ``options`` are :class:`Worker`'s (any
        :class:`~pgflow_kombu.settings.WorkerSettings` field, over this app's
        ``settings.worker``) and apply to each.
        To serve many flows from one shared pool, run ``Worker(app.flows, url)`` or the
        ``pgflow-kombu worker`` command instead.
        """
        if flow is not None and flows is not None:
            raise ConfigurationError("give start_worker one flow or flows=[...], not both")
        if isinstance(flow, (list, tuple, set)):
            raise ConfigurationError(
                f"start_worker takes one flow; for several pass flows={list(flow)!r}"
            )
        served = self._served([flow] if flow is not None else flows)
        with self._lock:
            if self._flow_workers is None:
                from pgflow_kombu.worker.byflow import FlowWorkers

                self._flow_workers = FlowWorkers()

        def compile_flows() -> None:  # after the options were checked: bad ones write nothing
            for each in served.values():
                self.ensure_flow(each)

        options.setdefault("hooks", self.hooks)
        options.setdefault("settings", self.settings.worker)
        workers = self._flow_workers.start(
            served, self.database_url, prepare=compile_flows, **options
        )
        if flow is not None:
            return workers[flow_slug_of(flow)]
        return workers

    def stop_worker(self, flow: FlowRef | None = None, /, *, timeout: float | None = None) -> bool:
        """Stop ``flow``'s worker (the other flows' workers keep running), or with no flow
        every worker of this app; running handlers get ``timeout`` seconds (default: the
        worker's ``shutdown_timeout``).

        ``stop_worker(flow)`` returns True, or raises :class:`WorkerNotFound` (the seeds'
        ``{:error, :not_found}``) when no worker serves that flow. ``stop_worker()`` returns
        whether there was any worker to stop.
        """
        workers = self._flow_workers
        if flow is None:
            return workers is not None and workers.stop_all(timeout)
        if not isinstance(flow, str) and not isinstance(getattr(flow, "slug", None), str):
            raise TypeError(
                f"stop_worker takes a flow, a task or a slug, not {flow!r} (timeout= is a keyword)"
            )
        slug = flow_slug_of(flow)
        if workers is None:
            raise WorkerNotFound(f"no worker of this app serves flow {slug!r}")
        workers.stop(slug, timeout)
        return True

    @property
    def workers(self) -> dict[str, Worker]:
        """The running workers started by :meth:`start_worker`, by flow slug."""
        return {} if self._flow_workers is None else self._flow_workers.running()

    def list_workers(self, *, include_stale: bool = False) -> list[WorkerInfo]:
        return self.client.list_workers(
            include_stale=include_stale, stale_after=self.settings.worker.stalled_after
        )

    def health_check(self) -> dict[str, Any]:
        """``{"status": "ok", "workers": [...], "flows": [...], ...}`` (raises when unreachable)."""
        health = self.client.health_check()
        health["workers"] = [w.model_dump(mode="json") for w in self.list_workers()]
        health["flows"] = sorted(self._flows)
        return health

    @staticmethod
    def core_version() -> str:
        """The pgflow core version whose schema and SQL functions this package matches."""
        return CORE_VERSION
