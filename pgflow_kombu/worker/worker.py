"""The worker: claims pgflow tasks from flow queues, runs their handlers, reports the outcomes.

Threads of a running worker: the consumer loop (the caller's thread under :meth:`Worker.run`),
the pool's slots, one reporter, one heartbeat. The loop asks its message source for what one
drain cycle delivers (at most the free prefetch), claims those messages with one
``pgflow_kombu.claim_tasks`` per flow (which also sets their visibility to timeout + 2 s), and
hands the claimed tasks to the pool. Outcomes go to the reporter, which reports them in grouped
transactions; once reported, the loop acknowledges their messages, which frees prefetch room.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from psycopg.types.json import Jsonb

from pgflow_kombu.db.queries import query
from pgflow_kombu.db.urls import check_url
from pgflow_kombu.errors import ConfigurationError, PgFlowError
from pgflow_kombu.worker.execution import FlowLike
from pgflow_kombu.worker.link import Link, is_connection_error
from pgflow_kombu.worker.membership import Membership
from pgflow_kombu.worker.pools import POOL_KINDS, Pool, make_pool
from pgflow_kombu.worker.reporter import DEFAULT_BATCH_SIZE, Reporter
from pgflow_kombu.worker.source import Delivery, MessageSource
from pgflow_kombu.worker.tasks import ClaimedTask, Outcome

__all__ = ["ExitCode", "Worker"]

log = logging.getLogger("pgflow_kombu.worker")


MIN_READ_VISIBILITY = 30
MAX_READ_VISIBILITY = 300


class ExitCode:
    """What :meth:`Worker.run` (and ``pgflow-kombu worker``) returns."""

    OK = 0  # stopped cleanly: every task it took was reported or handed back
    STARTUP_FAILED = 1  # configuration, flows or database prevented the start
    CRASHED = 70  # an unexpected internal error stopped the loop
    TASKS_LEFT = 75  # stopped, but tasks still running at the deadline were left for recovery
    FORCED = 130  # a second SIGINT: exited at once


@dataclass
class WorkerStats:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    stale: int = 0
    released: int = 0
    unclaimed: int = 0  # delivered messages with no queued task (another worker holds it)
    claim_batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class Worker:
    """Runs the handlers of ``flows`` (flow slug -> flow) for tasks queued in ``url``'s database.

    ``queues`` restricts the served flows; ``prefetch`` (default twice ``concurrency``) bounds the
    tasks claimed and held at once; ``shutdown_timeout`` is how long a stop waits for running
    handlers; ``heartbeat_interval``/``stalled_after`` drive liveness and stalled-task recovery.
    ``app_ref`` ("pkg.module:app") lets the process pool's children import the flows.
    """

    def __init__(
        self,
        flows: Mapping[str, FlowLike],
        url: str,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 4,
        pool: str = "threads",
        prefetch: int | None = None,
        shutdown_timeout: float = 30.0,
        heartbeat_interval: float = 5.0,
        stalled_after: float = 30.0,
        recovery_interval: float | None = None,
        app_ref: str | None = None,
        source: MessageSource | None = None,
        ensure_flows: bool = True,
        report_batch: int = DEFAULT_BATCH_SIZE,
        fetch_timeout: float = 1.0,
        function_name: str | None = None,
        synchronous_commit: bool = False,
    ) -> None:
        self.url = check_url(url)
        served = dict(flows)
        if queues:
            unknown = sorted(set(queues) - set(served))
            if unknown:
                raise ConfigurationError(
                    f"no code for flow(s) {', '.join(unknown)} (known: {', '.join(sorted(served))})"
                )
            served = {q: served[q] for q in queues}
        if not served:
            raise ConfigurationError("a worker needs at least one flow to serve")
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
        if pool not in POOL_KINDS:
            raise ConfigurationError(
                f"unknown pool {pool!r}: choose one of {', '.join(POOL_KINDS)}"
            )
        prefetch = 2 * concurrency if prefetch is None else prefetch
        if prefetch < 1:
            raise ConfigurationError(f"prefetch must be >= 1, got {prefetch}")
        for name, value in (
            ("shutdown_timeout", shutdown_timeout),
            ("heartbeat_interval", heartbeat_interval),
            ("stalled_after", stalled_after),
        ):
            if not value > 0:
                raise ConfigurationError(f"{name} must be > 0, got {value}")
        if stalled_after <= heartbeat_interval:
            raise ConfigurationError(
                f"stalled_after ({stalled_after} s) must exceed heartbeat_interval "
                f"({heartbeat_interval} s), or live workers would look dead"
            )
        self.flows: dict[str, FlowLike] = served
        self.concurrency = concurrency
        self.pool_kind = pool
        self.prefetch = prefetch
        self.shutdown_timeout = shutdown_timeout
        self.app_ref = app_ref
        self.ensure_flows = ensure_flows
        self.fetch_timeout = fetch_timeout
        self.stats = WorkerStats()
        self.exit_code: int | None = None

        self.membership = Membership(
            self.url,
            list(served),
            heartbeat_interval=heartbeat_interval,
            stalled_after=stalled_after,
            recovery_interval=recovery_interval,
            function_name=function_name,
            on_deprecated=self._wake,
        )
        self._source = source
        self._claims = Link(
            self.url,
            application_name="pgflow-kombu-claims",
            synchronous_commit=synchronous_commit,
        )
        self._reporter = Reporter(
            self.url,
            self._on_reported,
            batch_size=report_batch,
            synchronous_commit=synchronous_commit,
            on_connection_lost=self._on_connection_lost,
        )
        self._pool: Pool = make_pool(
            pool,
            served,
            concurrency,
            self._on_outcome,
            app_ref=app_ref,
            loglevel=logging.getLogger().getEffectiveLevel(),
        )
        self._reported: queue.SimpleQueue[list[tuple[Outcome, str]]] = queue.SimpleQueue()
        self._done_tasks: queue.SimpleQueue[ClaimedTask] = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._finished = threading.Event()
        self._startup_error: BaseException | None = None
        self._held = 0
        self._thread: threading.Thread | None = None
        self._signals = 0
        self._needs_reconcile = False
        self._unclaimed: list[Delivery] = []
        self._holding: dict[tuple[str, str, int], ClaimedTask] = {}

    # -- public API ----------------------------------------------------------------------------

    @property
    def worker_ids(self) -> dict[str, str]:
        """The ``pgflow.workers`` id of each served queue."""
        return dict(self.membership.worker_ids)

    @property
    def held(self) -> int:
        """Tasks claimed and not yet reported."""
        return self._held

    @property
    def pool_stats(self) -> dict[str, int]:
        return self._pool.stats.as_dict()

    def run(self) -> int:
        """Serve until stopped (SIGTERM/SIGINT when on the main thread, or :meth:`stop`).

        Returns an :class:`ExitCode`. The first signal stops claiming and lets running handlers
        finish within ``shutdown_timeout``; a second SIGINT exits the process at once.
        """
        restore = self._install_signals()
        try:
            return self._serve()
        finally:
            restore()

    def start(self) -> None:
        """Serve from a background thread; returns once serving (raises if the start failed)."""
        if self._thread is not None:
            raise ConfigurationError("this worker was already started")
        self._thread = threading.Thread(target=self._serve, name="pgflow-worker", daemon=True)
        self._thread.start()
        while not self._started.wait(0.1):
            if self._finished.is_set():
                break
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop claiming, wait for running handlers (up to ``timeout``, default
        ``shutdown_timeout``), and return the exit code (None if still stopping)."""
        if timeout is not None:
            self.shutdown_timeout = timeout
        self.request_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.shutdown_timeout + 30)
        return self.exit_code

    def request_stop(self) -> None:
        """Begin a graceful stop without waiting (safe from signal handlers)."""
        self._stopping.set()
        self._wake()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    # -- signals -------------------------------------------------------------------------------

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1 and signum == signal.SIGINT:
            os.write(2, b"pgflow-kombu worker: second interrupt, exiting now\n")
            os._exit(ExitCode.FORCED)
        if self._signals == 1:
            log.warning(
                "%s received: no new tasks; waiting up to %g s for %d running task(s) "
                "(press Ctrl-C again to exit at once)",
                signal.Signals(signum).name,
                self.shutdown_timeout,
                self._pool.running,
                extra={"event": "shutdown_requested"},
            )
        self.request_stop()

    # -- the loop ------------------------------------------------------------------------------

    def _serve(self) -> int:
        try:
            self._startup()
        except BaseException as exc:
            self._startup_error = exc
            log.error("worker failed to start: %s", exc, extra={"event": "startup_failed"})
            self._reporter.stop(0)
            self._teardown()
            self.exit_code = ExitCode.STARTUP_FAILED
            self._finished.set()
            return self.exit_code
        self._started.set()
        code = ExitCode.OK
        try:
            self._loop()
        except Exception:
            log.exception("worker loop crashed", extra={"event": "crashed"})
            code = ExitCode.CRASHED
        try:
            left = self._shutdown()
        except Exception:
            log.exception("error during shutdown")
            left = -1
        if code == ExitCode.OK and left:
            code = ExitCode.TASKS_LEFT
        self.exit_code = code
        self._finished.set()
        return code

    def _startup(self) -> None:
        if self.ensure_flows:
            from pgflow_kombu.worker.flowsync import ensure_flows

            shapes = {
                slug: flow.shape() for slug, flow in self.flows.items() if hasattr(flow, "shape")
            }
            ensure_flows(self.url, shapes)
        self.membership.register()
        self._pool.start()
        self._reporter.start()
        self.membership.start()
        if self._source is None:
            self._source = default_source(self.url)
        self._source.read_visibility = self._read_visibility()
        self._source.open(list(self.flows), self.prefetch)
        log.info(
            "worker ready: %s pool x %d, prefetch %d, flows %s",
            self.pool_kind,
            self.concurrency,
            self.prefetch,
            ", ".join(self.flows),
            extra={"event": "worker_ready", "worker_ids": self.worker_ids},
        )

    def _read_visibility(self) -> int:
        """Longest step timeout + 2 s of the served flows, within [30, 300] s: reads hide
        messages that long, so most claims need no second visibility update, and a message read
        but never claimed (the worker died in between) is back within minutes at most."""
        rows = self._claims.fetch(query("worker.flow_timeouts"), {"flow_slugs": list(self.flows)})
        longest = max((int(timeout) for _flow, _step, timeout in rows), default=0)
        return min(max(longest + 2, MIN_READ_VISIBILITY), MAX_READ_VISIBILITY)

    def _loop(self) -> None:
        source = self._source
        assert source is not None
        backoff = 0.1
        while not self._stopping.is_set():
            self._drain_reported()
            if self.membership.deprecated:
                break
            # Room: prefetch minus the tasks waiting or running, minus a report backlog beyond
            # two batches (a slow database slows claiming down too).
            backlog = max(0, self._reporter.backlog - 2 * self._reporter.batch_size)
            free = self.prefetch - self._held - backlog
            if free <= 0:
                self._wakeup.wait(0.5)
                self._wakeup.clear()
                continue
            try:
                if self._needs_reconcile:
                    self._reconcile()
                if self._unclaimed:
                    # Read before the connection broke and not claimed yet: still hidden for
                    # us, so claim them now instead of letting them wait out their visibility.
                    retry, self._unclaimed = self._unclaimed, []
                    self._claim(source, retry)
                deliveries = source.fetch(free, self.fetch_timeout)
                if deliveries:
                    self._claim(source, deliveries)
                if backoff > 0.1:
                    log.info("database reachable again", extra={"event": "db_reconnected"})
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
                log.log(
                    logging.WARNING if backoff == 0.1 else logging.DEBUG,
                    "database unreachable (%s); retrying every few seconds",
                    exc,
                    extra={"event": "db_unreachable"},
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _claim(self, source: MessageSource, deliveries: list[Delivery]) -> None:
        by_queue: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in deliveries:
            by_queue[delivery.queue].append(delivery)
        batches = list(by_queue.items())
        for position, (flow_slug, batch) in enumerate(batches):
            try:
                self._claim_batch(source, flow_slug, batch)
            except PgFlowError as exc:
                if is_connection_error(exc):
                    # The claim may have committed before the connection broke: once the
                    # database is back, tasks started by us that we do not hold are handed back,
                    # and the messages not claimed are claimed again.
                    self._needs_reconcile = True
                    self._unclaimed = [d for _q, b in batches[position:] for d in b]
                else:
                    source.ack([d.handle for _q, b in batches[position:] for d in b])
                raise

    def _claim_batch(self, source: MessageSource, flow_slug: str, batch: list[Delivery]) -> None:
        worker_id = self.membership.worker_ids.get(flow_slug)
        if worker_id is None:  # not one of ours: leave it alone
            source.ack([d.handle for d in batch])
            return
        by_id = {d.msg_id: d for d in batch}
        rows = self._claims.fetch(
            query("worker.claim_tasks"),
            {
                "flow_slug": flow_slug,
                "msg_ids": list(by_id),
                "worker_id": worker_id,
                "read_visibility": source.read_visibility,
            },
        )
        self.stats.claim_batches += 1
        for run_id, step_slug, task_index, msg_id, task_input, attempt, timeout in rows:
            delivery = by_id.pop(msg_id)
            task = ClaimedTask(
                flow_slug=flow_slug,
                run_id=str(run_id),
                step_slug=step_slug,
                task_index=task_index,
                msg_id=msg_id,
                input=task_input,
                attempt=attempt,
                timeout=float(timeout),
                worker_id=worker_id,
                delivery=delivery.handle,
            )
            self._held += 1
            self.stats.claimed += 1
            self._track(task)
            self._pool.submit(task)
        if by_id:
            self.stats.unclaimed += len(by_id)
            source.ack([d.handle for d in by_id.values()])

    def _on_outcome(self, outcome: Outcome) -> None:
        """Called by the pool (any thread) when an attempt ends."""
        task = outcome.task
        if outcome.failed:
            log.error(
                "task %s failed (run %s, attempt %d): %s%s",
                task.label,
                task.run_id,
                task.attempt,
                outcome.error,
                f"\n{outcome.traceback.rstrip()}" if outcome.traceback else "",
                extra={
                    "event": "task_failed",
                    "flow_slug": task.flow_slug,
                    "step_slug": task.step_slug,
                    "task_index": task.task_index,
                    "run_id": task.run_id,
                    "attempt": task.attempt,
                    "timed_out": outcome.timed_out,
                },
            )
        elif log.isEnabledFor(logging.DEBUG):
            log.debug(
                "task %s completed in %.1f ms (run %s, attempt %d)",
                task.label,
                outcome.duration * 1000,
                task.run_id,
                task.attempt,
                extra={"event": "task_completed", "run_id": task.run_id},
            )
        self._reporter.put(outcome)
        # Its slot is free: the loop may claim more while the report is being committed.
        self._done_tasks.put(task)
        self._wake()

    def _on_reported(self, done: list[tuple[Outcome, str]]) -> None:
        """Called by the reporter thread after a batch committed."""
        self._reported.put(done)

    def _on_connection_lost(self) -> None:
        """A connection of the worker broke: reports or claims committed just before may be lost
        (commits are asynchronous), so once the database is back, tasks the database says we
        started but we no longer hold are handed back (at-least-once)."""
        self._needs_reconcile = True

    def _drain_reported(self) -> None:
        handles: list[Any] = []
        while True:
            try:
                task = self._done_tasks.get_nowait()
            except queue.Empty:
                break
            self._held -= 1
            handles.append(task.delivery)
        if handles and self._source is not None:
            self._source.ack(handles)
        while True:
            try:
                done = self._reported.get_nowait()
            except queue.Empty:
                break
            for outcome, result in done:
                self._untrack(outcome.task)
                if result == "completed":
                    self.stats.completed += 1
                elif result in ("failed", "rejected"):
                    self.stats.failed += 1
                else:
                    self.stats.stale += 1

    def _wake(self) -> None:
        self._wakeup.set()
        waker = getattr(self._source, "wake", None)
        if waker is not None:
            waker()

    # -- held tasks, for reconciliation after a lost claim ---------------------------------------

    def _track(self, task: ClaimedTask) -> None:
        self._holding[(task.run_id, task.step_slug, task.task_index)] = task

    def _untrack(self, task: ClaimedTask) -> None:
        self._holding.pop((task.run_id, task.step_slug, task.task_index), None)

    def _reconcile(self) -> None:
        """Hand back tasks the database says we started but we never received."""
        rows = self._claims.fetch(
            query("worker.held_tasks"), {"worker_ids": list(self.membership.worker_ids.values())}
        )
        orphans = [
            {
                "run_id": str(run_id),
                "step_slug": step_slug,
                "task_index": task_index,
                "attempt": attempts,
                "worker_id": str(worker_id),
            }
            for run_id, step_slug, task_index, attempts, worker_id in rows
            if (str(run_id), step_slug, task_index) not in self._holding
        ]
        if orphans:
            rows = self._claims.fetch(query("worker.release_tasks"), {"tasks": Jsonb(orphans)})
            log.warning(
                "handed back %d task(s) claimed while the connection broke",
                rows[0][0] if rows else 0,
                extra={"event": "tasks_reconciled"},
            )
        self._needs_reconcile = False

    # -- shutdown ------------------------------------------------------------------------------

    def _shutdown(self) -> int:
        """Graceful stop; returns how many tasks were left for stalled-task recovery."""
        deadline = time.monotonic() + self.shutdown_timeout
        if self._source is not None:
            with contextlib.suppress(Exception):
                self._source.stop_consuming()
        unstarted = self._pool.close()
        if unstarted:
            self._release(unstarted)
        finished = self._pool.join(max(0.0, deadline - time.monotonic()))
        running = self._pool.running
        if not finished:
            log.warning(
                "%d task(s) still running after %g s: left for stalled-task recovery",
                running,
                self.shutdown_timeout,
                extra={"event": "tasks_abandoned", "count": running},
            )
        unreported = self._reporter.stop(max(5.0, deadline - time.monotonic()))
        if unreported:
            log.warning(
                "%d outcome(s) could not be reported: left for stalled-task recovery",
                unreported,
                extra={"event": "reports_abandoned", "count": unreported},
            )
        self._drain_reported()
        self._teardown()
        log.info(
            "worker stopped: %s",
            ", ".join(f"{k} {v}" for k, v in self.stats.as_dict().items()),
            extra={"event": "worker_stopped", **self.stats.as_dict()},
        )
        return (0 if finished else running) + unreported

    def _release(self, tasks: list[ClaimedTask]) -> None:
        payload = Jsonb([t.identity() for t in tasks])
        for attempt in range(3):
            try:
                rows = self._claims.fetch(query("worker.release_tasks"), {"tasks": payload})
            except PgFlowError as exc:
                log.warning("could not hand back %d unstarted task(s): %s", len(tasks), exc)
                time.sleep(0.5 * (attempt + 1))
                continue
            released = rows[0][0] if rows else 0
            self.stats.released += released
            self._held -= len(tasks)
            for task in tasks:
                self._untrack(task)
            if self._source is not None:
                self._source.ack([t.delivery for t in tasks])
            log.info(
                "handed back %d claimed task(s) that had not started",
                released,
                extra={"event": "tasks_released", "count": released},
            )
            return

    def _teardown(self) -> None:
        for closer in (
            self._pool.terminate,
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


def default_source(url: str) -> MessageSource:
    """The ``pgflow://`` kombu transport."""
    from pgflow_kombu.worker.consumer import KombuSource

    return KombuSource(url)
