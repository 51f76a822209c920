"""The asyncio pool: one event loop thread runs up to ``concurrency`` handlers at once.

Async handlers run on the loop; plain functions run in a thread of their own so they never block
it. At its deadline an attempt is failed with a timeout error by the watchdog (a thread, so it
fires even when a coroutine hogs the loop), its slot is freed and its coroutine is cancelled; a
coroutine that ignores cancellation, or a plain function (threads cannot be stopped), keeps
running as a stuck slot whose late result is discarded. The coroutines of a cancelled run are
cancelled the same way (see worker/cancellation.py). A coroutine that blocks the loop without
awaiting stalls every slot of this pool: use the thread or process pool for such code.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from pgflow_kombu.worker.execution import FlowLike, Result, aexecute
from pgflow_kombu.worker.pools.base import Attempt, OutcomeSink, SlotPool, Watchdog
from pgflow_kombu.worker.tasks import ClaimedTask

__all__ = ["AsyncioPool"]


class AsyncioPool(SlotPool):
    kind = "asyncio"

    def __init__(self, flows: Mapping[str, FlowLike], concurrency: int, sink: OutcomeSink) -> None:
        super().__init__(concurrency, sink)
        self.flows = flows
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="pgflow-asyncio", daemon=True)
        self._watchdog = Watchdog(self._on_expire)
        self._pending: deque[ClaimedTask] = deque()
        self._closed = False
        self._tasks: dict[Attempt, asyncio.Task[None]] = {}
        self._in_threads: set[Attempt] = set()  # attempts whose plain function still runs

    def start(self) -> None:
        self._watchdog.start()
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def submit(self, task: ClaimedTask) -> None:
        with self._cond:
            self._pending.append(task)
        self._loop.call_soon_threadsafe(self._fill)

    def close(self) -> list[ClaimedTask]:
        with self._cond:
            self._closed = True
            left = list(self._pending)
            self._pending.clear()
            return left

    def terminate(self) -> None:
        self.close()
        self._watchdog.stop()
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._cancel_all)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def cancel_run(self, run_id: str) -> None:
        """The run was cancelled: cancel the coroutines of its attempts (from any thread)."""
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._cancel_run, run_id)

    def _cancel_run(self, run_id: str) -> None:
        for attempt, task in list(self._tasks.items()):
            if attempt.task.run_id == run_id:
                task.cancel()

    def _cancel_all(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()

    # -- on the loop thread --------------------------------------------------------------------

    def _fill(self) -> None:
        while True:
            with self._cond:
                if self._closed or not self._pending or self._running >= self.concurrency:
                    return
                task = self._pending.popleft()
                self._running += 1
                self.stats.started += 1
            if not self._may_start(task):
                with self._cond:
                    self._running -= 1
                    self.stats.started -= 1
                continue
            self._started(task)
            attempt = Attempt(task)
            self._tasks[attempt] = self._loop.create_task(self._run(attempt))
            self._watchdog.watch(attempt)

    async def _run(self, attempt: Attempt) -> None:
        try:
            result = await aexecute(
                self.flows, attempt.task, lambda call: self._run_sync(attempt, call)
            )
        except asyncio.CancelledError:
            result = None
        finally:
            self._tasks.pop(attempt, None)
        if attempt.finish():
            if result is None:  # cancelled, its run was: the report will be stale
                result = Result(
                    error=f"CancelledError: run {attempt.task.run_id} was cancelled",
                    duration=time.monotonic() - attempt.started,
                )
            self._watchdog.forget()
            self._finish_slot(attempt.outcome(result))
            self._fill()
            return
        with self._cond:
            if attempt in self._in_threads:
                return  # its thread still runs; it settles the count when it returns
            if result is None:
                self.stats.stuck -= 1  # cancelled: no result to discard
                return
        self._discard_late(attempt.task)

    def _run_sync(self, attempt: Attempt, call: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run a plain function in a thread of its own; a future for its result."""
        future: asyncio.Future[Any] = self._loop.create_future()

        def settle(value: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        def target() -> None:
            value: Any = None
            error: BaseException | None = None
            try:
                value = call()
            except BaseException as exc:
                error = exc
            with self._cond:
                self._in_threads.discard(attempt)
                late = attempt.expired
            if late:
                self._discard_late(attempt.task)
                return
            self._loop.call_soon_threadsafe(settle, value, error)

        with self._cond:
            self._in_threads.add(attempt)
        threading.Thread(target=target, name="pgflow-async-sync", daemon=True).start()
        return future

    def _expired(self, attempt: Attempt) -> None:
        task = self._tasks.get(attempt)
        if task is not None:
            task.cancel()
        self._fill()

    # -- on the watchdog thread ----------------------------------------------------------------

    def _on_expire(self, attempt: Attempt) -> None:
        self._expire_slot(attempt, "failed and cancelled")
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._expired, attempt)
