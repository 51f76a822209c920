"""The thread pool: ``concurrency`` threads run handlers in this process.

A thread cannot be killed. When a handler outlives its timeout the watchdog reports the timeout
failure on time, frees the slot by starting a replacement thread, and counts the old one as
stuck; when the stuck handler finally returns, its result is discarded and its thread ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from pgflow_kombu.worker.execution import FlowLike, execute
from pgflow_kombu.worker.pools.base import (
    Attempt,
    OutcomeSink,
    PendingQueue,
    PoolStats,
    Watchdog,
)
from pgflow_kombu.worker.tasks import ClaimedTask

__all__ = ["ThreadPool"]

log = logging.getLogger("pgflow_kombu.worker")


class ThreadPool:
    kind = "threads"

    def __init__(self, flows: Mapping[str, FlowLike], concurrency: int, sink: OutcomeSink) -> None:
        self.flows = flows
        self.concurrency = concurrency
        self.stats = PoolStats()
        self._sink = sink
        self._pending = PendingQueue()
        self._watchdog = Watchdog(self._on_expire)
        self._cond = threading.Condition()
        self._running = 0
        self._closed = False
        self._serial = 0

    @property
    def running(self) -> int:
        return self._running

    def start(self) -> None:
        self._watchdog.start()
        for _ in range(self.concurrency):
            self._spawn()

    def submit(self, task: ClaimedTask) -> None:
        self._pending.put(task)

    def close(self) -> list[ClaimedTask]:
        self._closed = True
        return self._pending.close()

    def join(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._running == 0, timeout)

    def terminate(self) -> None:
        self.close()
        self._watchdog.stop()

    def _spawn(self) -> None:
        self._serial += 1
        thread = threading.Thread(
            target=self._slot, name=f"pgflow-slot-{self._serial}", daemon=True
        )
        thread.start()

    def _slot(self) -> None:
        while True:
            task = self._pending.get()
            if task is None:
                return
            attempt = Attempt(task)
            with self._cond:
                self._running += 1
                self.stats.started += 1
            self._watchdog.watch(attempt)
            result = execute(self.flows, task)
            if attempt.finish():
                self._watchdog.forget()
                # The outcome is handed over before the slot counts as free, so that a stop
                # waiting for running tasks finds every outcome already queued for reporting.
                self._sink(attempt.outcome(result))
                with self._cond:
                    self._running -= 1
                    self.stats.finished += 1
                    self._cond.notify_all()
                continue
            # The watchdog already failed this attempt and started a replacement thread.
            with self._cond:
                self.stats.stuck -= 1
                self.stats.late_discarded += 1
            log.warning(
                "late result of %s (run %s, attempt %d) discarded: it already timed out",
                task.label,
                task.run_id,
                task.attempt,
                extra={"event": "late_result_discarded", "run_id": task.run_id},
            )
            return

    def _on_expire(self, attempt: Attempt) -> None:
        self._sink(attempt.timeout_outcome())
        with self._cond:
            self._running -= 1
            self.stats.timed_out += 1
            self.stats.stuck += 1
            stuck = self.stats.stuck
            self._cond.notify_all()
        log.warning(
            "%s (run %s, attempt %d) ran past its %g s timeout: failed; its thread cannot be "
            "stopped and is left running (%d stuck)",
            attempt.task.label,
            attempt.task.run_id,
            attempt.task.attempt,
            attempt.task.timeout,
            stuck,
            extra={"event": "task_timeout", "run_id": attempt.task.run_id, "stuck": stuck},
        )
        if not self._closed:
            self._spawn()
