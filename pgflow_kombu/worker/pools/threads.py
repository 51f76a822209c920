"""The thread pool: ``concurrency`` threads run handlers in this process.

A thread cannot be killed. When a handler outlives its timeout the watchdog reports the timeout
failure on time, frees the slot by starting a replacement thread, and counts the old one as
stuck; when the stuck handler finally returns, its result is discarded and its thread ends.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from pgflow_kombu.worker.execution import FlowLike, execute
from pgflow_kombu.worker.pools.base import (
    Attempt,
    OutcomeSink,
    PendingQueue,
    SlotPool,
    Watchdog,
)
from pgflow_kombu.worker.tasks import ClaimedTask

__all__ = ["ThreadPool"]


class ThreadPool(SlotPool):
    kind = "threads"

    def __init__(self, flows: Mapping[str, FlowLike], concurrency: int, sink: OutcomeSink) -> None:
        super().__init__(concurrency, sink)
        self.flows = flows
        self._pending = PendingQueue()
        self._watchdog = Watchdog(self._on_expire)
        self._closed = False
        self._serial = 0

    def start(self) -> None:
        self._watchdog.start()
        for _ in range(self.concurrency):
            self._spawn()

    def submit(self, task: ClaimedTask) -> None:
        self._pending.put(task)

    def close(self) -> list[ClaimedTask]:
        self._closed = True
        return self._pending.close()

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
            if not self._may_start(task):
                continue
            attempt = Attempt(task)
            self._take_slot(task)
            self._watchdog.watch(attempt)
            result = execute(self.flows, task)
            if attempt.finish():
                self._watchdog.forget()
                self._finish_slot(attempt.outcome(result))
                continue
            # The watchdog already failed this attempt and started a replacement thread.
            self._discard_late(task)
            return

    def _on_expire(self, attempt: Attempt) -> None:
        self._expire_slot(attempt, "failed; its thread cannot be stopped and is left running")
        if not self._closed:
            self._spawn()
