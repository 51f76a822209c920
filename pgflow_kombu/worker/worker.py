"""The worker: claims pgflow tasks from flow queues, runs their handlers, reports the outcomes.

Threads of a running worker: the loop (the caller's thread under :meth:`Worker.run`), the pool's
slots, two reporters, one heartbeat. The loop asks its message source for what one drain cycle
delivers (at most the free prefetch), claims it with one ``pgflow_kombu.claim_tasks`` per flow
(see claims.py), and hands the claimed tasks to the pool; the default source
(:class:`~pgflow_kombu.worker.claiming.ClaimingSource`) does both in one statement. A finished
task frees its slot at once (its message is acknowledged, which returns room to the QoS
prefetch) and its outcome goes to the reporter, which reports outcomes in grouped transactions
while the loop claims more.

Network faults: every connection has keepalives and timeouts (``db/connect.py``), so a cut link
fails within seconds and is logged once (``connectivity.py``). The worker claims only while its
last heartbeat that went through is recent enough that no other worker can have taken its tasks
(:meth:`Membership.alive_until`), and a slot starts a claimed task only under the same condition;
a task that fails it is handed back, never started (at-least-once, and never a second start by a
worker that could know it lost the task).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pgflow_kombu.db.connect import liveness
from pgflow_kombu.db.urls import check_url
from pgflow_kombu.errors import PgFlowError
from pgflow_kombu.flows.schedules import ScheduleSpec
from pgflow_kombu.observability.hooks import Hooks
from pgflow_kombu.settings import WorkerSettings
from pgflow_kombu.worker.cancellation import Cancellations
from pgflow_kombu.worker.claiming import ClaimingSource
from pgflow_kombu.worker.claims import Claims, read_visibility
from pgflow_kombu.worker.connectivity import Connectivity
from pgflow_kombu.worker.events import WorkerEvents
from pgflow_kombu.worker.execution import FlowLike
from pgflow_kombu.worker.lifecycle import Lifecycle
from pgflow_kombu.worker.link import is_connection_error
from pgflow_kombu.worker.membership import Membership
from pgflow_kombu.worker.options import select_flows
from pgflow_kombu.worker.pools import Pool, make_pool
from pgflow_kombu.worker.pools.base import SlotPool
from pgflow_kombu.worker.reporter import Reporter
from pgflow_kombu.worker.retention import Retention
from pgflow_kombu.worker.scheduler import Scheduler
from pgflow_kombu.worker.schedulesync import check_schedules, sync_schedules
from pgflow_kombu.worker.source import MessageSource
from pgflow_kombu.worker.status import WorkerStats
from pgflow_kombu.worker.tasks import ClaimedTask, Outcome, ReportResult

__all__ = ["Worker"]

log = logging.getLogger("pgflow_kombu.worker")


class Worker(Lifecycle):
    """Runs the handlers of ``flows`` (flow slug -> flow) for tasks queued in ``url``'s database.

    How it runs is a :class:`~pgflow_kombu.settings.WorkerSettings`: ``settings``, else the
    ``PGFLOW_WORKER_*`` environment, with any of its fields given as keywords on top
    (``Worker(flows, url, concurrency=8, pool="processes")``); a bad value raises
    :class:`ConfigurationError` naming it before anything touches the database. ``queues``
    restricts the served flows. ``app_ref`` ("pkg.module:app") lets the process pool's children
    import the flows. ``hooks`` (an app's :class:`~pgflow_kombu.observability.Hooks`) are called
    along with the worker's own ``worker.hooks``.

    Schedules: on start the worker writes ``schedules`` (default: those of the served flows,
    ``flow.schedules``) to the database and disables the code schedules of its flows that are
    gone; with the ``scheduler`` setting (default) a thread fires the due ticks of every schedule
    in the database (each tick starts once however many workers run; see worker/scheduler.py).
    With ``retention`` the worker prunes finished runs and queue archives older than that every
    ``retention_interval`` seconds (one worker at a time: see retention.py).
    """

    def __init__(
        self,
        flows: Mapping[str, FlowLike],
        url: str,
        settings: WorkerSettings | None = None,
        *,
        queues: Sequence[str] | None = None,
        app_ref: str | None = None,
        source: MessageSource | ClaimingSource | None = None,
        ensure_flows: bool = True,
        function_name: str | None = None,
        hooks: Hooks | None = None,
        schedules: Sequence[ScheduleSpec] | None = None,
        **options: Any,
    ) -> None:
        self.url = check_url(url)
        served = select_flows(flows, queues)
        unknown = sorted(set(options) - set(WorkerSettings.model_fields))
        if unknown:  # as for any keyword a function does not take
            raise TypeError(
                f"Worker() got unexpected keyword argument(s) {', '.join(unknown)} "
                f"(settings: {', '.join(WorkerSettings.model_fields)})"
            )
        config = WorkerSettings.load(**options) if settings is None else settings.replace(**options)
        self.settings = config
        self.flows: dict[str, FlowLike] = served
        self.concurrency = config.concurrency
        self.pool_kind = config.pool
        self.prefetch = config.claim_ahead
        self.shutdown_timeout = config.shutdown_timeout
        self.app_ref = app_ref
        self.ensure_flows = ensure_flows
        self.fetch_timeout = config.fetch_timeout
        self.stats = WorkerStats()
        self.schedules = check_schedules(served, schedules)
        self.scheduler: Scheduler | None = (
            Scheduler(self.url, poll_interval=config.scheduler_poll_interval)
            if config.scheduler
            else None
        )
        self.exit_code: int | None = None
        # This worker's callbacks, then those of ``hooks`` (its app's): see observability/hooks.py.
        self.hooks = Hooks(hooks)
        self._events = WorkerEvents(self.hooks)
        self.retention = (
            None
            if config.retention is None
            else Retention(self.url, config.retention, interval=config.retention_interval)
        )
        self.cancellations = Cancellations()
        self.connectivity = Connectivity()
        # Statements are cancelled after the configured statement_timeout; claims and heartbeats
        # are pointless beyond stalled_after (the others may have taken the worker's tasks).
        timeout = liveness().statement_timeout or None
        stalled_after = config.stalled_after
        short_timeout = min(timeout or stalled_after, stalled_after)

        self.membership = Membership(
            self.url,
            list(served),
            heartbeat_interval=config.heartbeat_interval,
            stalled_after=stalled_after,
            recovery_interval=config.recovery_interval,
            function_name=function_name,
            on_deprecated=self._wake,
            on_connection_lost=self._on_connection_lost,
            cancellations=self.cancellations,
            connectivity=self.connectivity,
            statement_timeout=short_timeout,
        )
        self._source = source
        self._claims = Claims(
            self.url,
            self.membership.worker_ids,
            self.stats,
            synchronous_commit=config.synchronous_commit,
            statement_timeout=short_timeout,
            connectivity=self.connectivity,
        )
        self._reporter = Reporter(
            self.url,
            self._on_reported,
            batch_size=config.report_batch,
            synchronous_commit=config.synchronous_commit,
            on_connection_lost=self._on_connection_lost,
            on_settled=self._events.settled,
            statement_timeout=timeout,
            connectivity=self.connectivity,
        )
        self._pool: Pool = make_pool(
            config.pool,
            served,
            config.concurrency,
            self._on_outcome,
            app_ref=app_ref,
            loglevel=logging.getLogger().getEffectiveLevel(),
        )
        if isinstance(self._pool, SlotPool):
            self._pool.on_start = self._events.task_started
        # The asyncio pool cancels the coroutines of a cancelled run.
        self.cancellations.listeners.append(self._pool.cancel_run)
        self._pool.gate = self._may_start
        self._not_started: queue.SimpleQueue[ClaimedTask] = queue.SimpleQueue()
        self._reported: queue.SimpleQueue[list[tuple[Outcome, ReportResult]]] = queue.SimpleQueue()
        self._done_tasks: queue.SimpleQueue[ClaimedTask] = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._finished = threading.Event()
        self._startup_error: BaseException | None = None
        self._held = 0
        self._thread: threading.Thread | None = None

    # -- public API ----------------------------------------------------------------------------

    @property
    def worker_ids(self) -> dict[str, str]:
        """The ``pgflow.workers`` id of each served queue."""
        return dict(self.membership.worker_ids)

    @property
    def held(self) -> int:
        """Tasks claimed and not finished (waiting for a slot or running)."""
        return self._held

    @property
    def pool_stats(self) -> dict[str, int]:
        return self._pool.stats.as_dict()

    # -- the loop ------------------------------------------------------------------------------

    def _startup(self) -> None:
        if self.ensure_flows:
            from pgflow_kombu.worker.flowsync import ensure_flows

            shapes = {
                slug: flow.shape() for slug, flow in self.flows.items() if hasattr(flow, "shape")
            }
            ensure_flows(self.url, shapes, self.flows)
        sync_schedules(self.url, self.schedules, list(self.flows))
        self.membership.register()
        self._pool.start()
        self._reporter.start()
        self.membership.start()
        if self.retention is not None:
            self.retention.start()
        if self._source is None:
            self._source = default_source(self.url)
        self._source.read_visibility = read_visibility(self.membership.stalled_after)
        self._source.open(list(self.flows), self.prefetch)
        if self.scheduler is not None:
            self.scheduler.start()
        log.info(
            "worker ready: %s pool x %d, prefetch %d, flows %s",
            self.pool_kind,
            self.concurrency,
            self.prefetch,
            ", ".join(self.flows),
            extra={"event": "worker_ready", "worker_ids": self.worker_ids},
        )

    def _loop(self) -> None:
        source = self._source
        assert source is not None
        backoff = 0.1
        # When the message connection last worked: a connection idle through an outage fails
        # when next used, which belongs to that outage, not to a new one.
        worked_at = time.monotonic()
        while not self._stopping.is_set():
            self._drain_reported()
            if self.membership.deprecated:
                break
            # Room: prefetch minus the tasks waiting or running, minus a report backlog beyond
            # two batches (a slow database slows claiming down too).
            backlog = max(0, self._reporter.backlog - 2 * self._reporter.batch_size)
            free = self.prefetch - self._held - backlog
            if free <= 0 or not self._may_claim() or self._batching(source):
                self._wakeup.wait(0.5)
                self._wakeup.clear()
                continue
            try:
                if self._claims.needs_reconcile:
                    self._claims.reconcile()
                if isinstance(source, ClaimingSource):
                    tasks = source.claim(self._claims, free, self.fetch_timeout)
                    if tasks:
                        self._submit(tasks)
                else:
                    retry = self._claims.pending_retry()
                    if retry:
                        self._claims.claim(source, retry, self._submit)
                    deliveries = source.fetch(free, self.fetch_timeout)
                    if deliveries:
                        self._claims.claim(source, deliveries, self._submit)
                self.connectivity.succeeded()
                worked_at = time.monotonic()
                backoff = 0.1
            except PgFlowError as exc:
                if not is_connection_error(exc):
                    # A statement failed (a conflict, a schema that does not match): the messages
                    # come back after their visibility; keep serving, loudly.
                    log.error(
                        "claiming failed: %s; retrying in %.1f s",
                        exc,
                        backoff,
                        extra={"event": "claim_failed"},
                    )
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                self._claims.needs_reconcile = True
                self.connectivity.failed(worked_at, exc)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _batching(self, source: Any) -> bool:
        """Whether to let room build up before the next claim: the queues hold more than the
        last claim took and every slot has a task, so claiming now would take only the few that
        finished (a claim costs about the same however many it takes). Once a slot has no task,
        the loop claims: no slot waits for a batch to build up."""
        return (
            isinstance(source, ClaimingSource)
            and source.backlogged
            and self._held >= self.concurrency
        )

    def _may_claim(self) -> bool:
        """Claim only while the last heartbeat went through and no other worker can take what
        is claimed now before it starts."""
        return self.membership.healthy and time.monotonic() < self.membership.alive_until()

    def _teardown(self) -> None:
        for closer in (
            self.scheduler.stop if self.scheduler is not None else None,
            self._pool.terminate,
            self.retention.stop if self.retention is not None else None,
            self.membership.stop,
            self._claims.close,
            self._source.close if self._source is not None else None,
        ):
            if closer is None:
                continue
            try:
                closer()
            except Exception:
                log.exception("error while stopping the worker")


def default_source(url: str) -> ClaimingSource:
    """Read and claim in one round trip (see claiming.py)."""
    return ClaimingSource(url)
