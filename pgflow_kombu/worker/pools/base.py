"""What every execution pool shares: the attempt state machine, the pending queue, the watchdog.

An :class:`Attempt` ends exactly once: either its slot finishes it with the handler's result, or
the watchdog expires it at its deadline (the pool then reports a timeout failure and frees the
slot). Whichever comes second loses and is discarded, which is how a late result of a thread or
coroutine that could not be stopped never reaches the database.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from pgflow_kombu.worker.execution import Result
from pgflow_kombu.worker.tasks import ClaimedTask, Outcome

__all__ = [
    "Attempt",
    "OutcomeSink",
    "PendingQueue",
    "Pool",
    "PoolStats",
    "SlotPool",
    "StartGate",
    "Watchdog",
]

log = logging.getLogger("pgflow_kombu.worker")

OutcomeSink = Callable[[Outcome], None]
# Asked just before a claimed task starts; False: the pool drops the task (the gate took it over).
StartGate = Callable[[ClaimedTask], bool]

_RUNNING, _DONE, _EXPIRED = 0, 1, 2


class Attempt:
    """One task in a slot, with the deadline after which it counts as timed out."""

    __slots__ = ("_lock", "_state", "deadline", "started", "task")

    def __init__(self, task: ClaimedTask) -> None:
        self.task = task
        self.started = time.monotonic()
        self.deadline = self.started + task.timeout
        self._lock = threading.Lock()
        self._state = _RUNNING

    def finish(self) -> bool:
        """Claim the right to report the handler's result; False once it timed out."""
        with self._lock:
            if self._state != _RUNNING:
                return False
            self._state = _DONE
            return True

    def expire(self) -> bool:
        """Claim the right to report a timeout; False once the result was reported."""
        with self._lock:
            if self._state != _RUNNING:
                return False
            self._state = _EXPIRED
            return True

    @property
    def expired(self) -> bool:
        return self._state == _EXPIRED

    @property
    def running(self) -> bool:
        return self._state == _RUNNING

    def timeout_outcome(self) -> Outcome:
        task = self.task
        return Outcome(
            task,
            error=(
                f"TimeoutError: step {task.step_slug!r} of flow {task.flow_slug!r} ran past its "
                f"timeout of {task.timeout:g} s"
            ),
            timed_out=True,
            duration=time.monotonic() - self.started,
        )

    def outcome(self, result: Result) -> Outcome:
        return Outcome(
            self.task,
            output=result.output,
            error=result.error,
            traceback=result.traceback,
            duration=result.duration,
            final=result.final,
        )


class Watchdog:
    """One thread that expires attempts at their deadlines and calls ``on_expire`` for each."""

    def __init__(self, on_expire: Callable[[Attempt], None], name: str = "pgflow-watchdog"):
        self._on_expire = on_expire
        self._heap: list[tuple[float, int, Attempt]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._dead = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, attempt: Attempt) -> None:
        with self._cond:
            heapq.heappush(self._heap, (attempt.deadline, next(self._counter), attempt))
            if self._heap[0][2] is attempt:
                self._cond.notify()

    def forget(self) -> None:
        """An attempt ended before its deadline: its entry is dead weight until then, so the
        heap is compacted once dead entries outnumber live ones (memory stays flat)."""
        with self._cond:
            self._dead += 1
            if self._dead > 64 and self._dead * 2 > len(self._heap):
                self._heap = [e for e in self._heap if e[2].running]
                heapq.heapify(self._heap)
                self._dead = 0

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                due: list[Attempt] = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                if not due:
                    wait = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(wait)
                    continue
            for attempt in due:
                if attempt.expire():
                    try:
                        self._on_expire(attempt)
                    except Exception:
                        log.exception("timeout handling failed for %s", attempt.task.label)


class PendingQueue:
    """Tasks claimed but not started yet: FIFO, and taken back whole at shutdown."""

    def __init__(self) -> None:
        self._items: deque[ClaimedTask] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, task: ClaimedTask) -> None:
        with self._cond:
            self._items.append(task)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> ClaimedTask | None:
        """The next task, or None when closed (or nothing came within ``timeout``)."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._items:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._items.popleft()

    def close(self) -> list[ClaimedTask]:
        """Stop handing out tasks; return the ones never started."""
        with self._cond:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return left

    def __len__(self) -> int:
        return len(self._items)


class PoolStats:
    """Counters a pool keeps for logs and tests (read without locking: indicative)."""

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0
        self.timed_out = 0
        self.stuck = 0  # slots whose handler outlived its timeout and is still running
        self.late_discarded = 0
        self.replaced = 0  # process children killed or lost and replaced

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class SlotPool:
    """The slot bookkeeping the pools share: the running count, stats, and the condition a stop
    waits on. A slot is taken when a task starts and freed once its outcome went to the sink."""

    def __init__(self, concurrency: int, sink: OutcomeSink) -> None:
        self.concurrency = concurrency
        self.stats = PoolStats()
        self.gate: StartGate | None = None
        self._sink = sink
        self._cond = threading.Condition()
        self._running = 0
        # Told when a slot starts an attempt (the worker's task_started hook).
        self.on_start: Callable[[ClaimedTask], None] | None = None

    @property
    def running(self) -> int:
        return self._running

    def join(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._running == 0, timeout)

    def cancel_run(self, run_id: str) -> None:
        """The run was cancelled. Threads and processes cannot be interrupted: their handlers
        see ``ctx.cancelled`` and their results are discarded (the asyncio pool does more)."""

    def kill(self) -> None:
        """The worker exits at once. Nothing to do for threads, which die with the process."""

    def _may_start(self, task: ClaimedTask) -> bool:
        """Whether ``task`` may start now (the worker's gate says so, if it set one)."""
        return self.gate is None or self.gate(task)

    def _take_slot(self, task: ClaimedTask) -> None:
        with self._cond:
            self._running += 1
            self.stats.started += 1
        self._started(task)

    def _started(self, task: ClaimedTask) -> None:
        if self.on_start is not None:
            try:
                self.on_start(task)
            except Exception:
                log.exception("start callback failed for %s", task.label)

    def _finish_slot(self, outcome: Outcome) -> None:
        # The outcome is handed over before the slot counts as free, so that a stop waiting for
        # running tasks finds every outcome already queued for reporting.
        self._sink(outcome)
        with self._cond:
            self._running -= 1
            self.stats.finished += 1
            self._cond.notify_all()

    def _expire_slot(self, attempt: Attempt, fate: str) -> None:
        """The watchdog expired ``attempt``: report its timeout and free its slot; the handler
        goes on as a stuck slot (``fate`` says what became of it, for the log)."""
        self._sink(attempt.timeout_outcome())
        with self._cond:
            self._running -= 1
            self.stats.timed_out += 1
            self.stats.stuck += 1
            stuck = self.stats.stuck
            self._cond.notify_all()
        task = attempt.task
        log.warning(
            "%s (run %s, attempt %d) ran past its %g s timeout: %s (%d stuck)",
            task.label,
            task.run_id,
            task.attempt,
            task.timeout,
            fate,
            stuck,
            extra={"event": "task_timeout", "run_id": task.run_id, "stuck": stuck},
        )

    def _discard_late(self, task: ClaimedTask) -> None:
        """A stuck slot's handler returned after its timeout was reported: drop its result."""
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


class Pool(Protocol):
    """An execution pool: ``submit`` never blocks; outcomes go to the sink given at creation."""

    kind: str
    concurrency: int
    stats: PoolStats
    gate: StartGate | None

    def start(self) -> None: ...

    def submit(self, task: ClaimedTask) -> None: ...

    def close(self) -> list[ClaimedTask]:
        """Stop starting tasks; return the claimed ones that never started."""
        ...

    def join(self, timeout: float) -> bool:
        """Wait for running handlers; True when none is left (stuck ones do not count)."""
        ...

    def terminate(self) -> None:
        """Release resources now (kill children); running handlers are abandoned."""
        ...

    def cancel_run(self, run_id: str) -> None:
        """Interrupt the running attempts of a cancelled run, where the pool can (any thread)."""
        ...

    def kill(self) -> None:
        """Stop every handler now, without waiting (before a forced exit of the process)."""
        ...

    @property
    def running(self) -> int: ...
