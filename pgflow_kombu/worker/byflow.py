"""One :class:`Worker` per flow, started and stopped by flow slug: the app's embedded workers.

The seeds' ``start_worker(flow)`` / ``stop_worker(flow)`` act on one flow's worker and leave the
others alone. Each flow therefore gets a worker of its own (its own pool, connections,
heartbeat thread and ``pgflow.workers`` row), so stopping one stops exactly that flow's work and
liveness. Serving many flows from one shared pool is what ``Worker(flows, url)`` and the
``pgflow-kombu worker`` command do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from pgflow_kombu.errors import ConfigurationError, WorkerNotFound
from pgflow_kombu.worker.execution import FlowLike
from pgflow_kombu.worker.worker import Worker

__all__ = ["FlowWorkers"]


class FlowWorkers:
    """The running workers of one app, by flow slug. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # held while starting, so one flow never gets two workers
        self._workers: dict[str, Worker] = {}

    def running(self) -> dict[str, Worker]:
        """The workers still serving, by flow slug (one that stopped by itself is left out)."""
        with self._lock:
            return {s: w for s, w in self._workers.items() if not w.wait_stopped(0)}

    def start(
        self,
        flows: Mapping[str, FlowLike],
        url: str,
        prepare: Callable[[], None] | None = None,
        **options: Any,
    ) -> dict[str, Worker]:
        """A running worker for each flow: the existing one, else a new one started now.

        The new workers are built (which checks ``options``) before ``prepare`` runs (e.g.
        compiling the flows), so bad options write nothing. When one fails to start, those this
        call started are stopped again and the error raised.
        """
        if "queues" in options:
            raise ConfigurationError("name the flows to serve as start_worker's argument")
        if "source" in options and len(flows) > 1:
            raise ConfigurationError("a message source serves one worker: start one flow")
        started: list[Worker] = []
        with self._lock:
            result = {
                slug: worker
                for slug, worker in self._workers.items()
                if slug in flows and not worker.wait_stopped(0)
            }
            new = {
                slug: Worker({slug: flow}, url, **options)
                for slug, flow in flows.items()
                if slug not in result
            }
            try:
                if prepare is not None:
                    prepare()
                for slug, worker in new.items():
                    worker.start()
                    self._workers[slug] = worker
                    started.append(worker)
                    result[slug] = worker
            except BaseException:
                for slug in [s for s, w in self._workers.items() if w in started]:
                    del self._workers[slug]
                stop_all(started, None)
                raise
        return {slug: result[slug] for slug in flows}

    def stop(self, slug: str, timeout: float | None = None) -> None:
        """Stop the worker of ``slug`` (the others keep running); :class:`WorkerNotFound` if none."""
        with self._lock:
            worker = self._workers.pop(slug, None)
        if worker is None:
            raise WorkerNotFound(f"no worker of this app serves flow {slug!r}")
        stop_all([worker], timeout)

    def stop_all(self, timeout: float | None = None) -> bool:
        """Stop every worker at once (a shared deadline); False when there was none."""
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        stop_all(workers, timeout)
        return bool(workers)


def stop_all(workers: list[Worker], timeout: float | None) -> None:
    """Ask every worker to stop, then wait for each: they shut down side by side."""
    for worker in workers:
        if timeout is not None:
            worker.shutdown_timeout = timeout
        worker.request_stop()
    for worker in workers:
        worker.stop()
