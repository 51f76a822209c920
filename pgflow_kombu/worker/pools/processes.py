"""The process pool: each slot drives one child process that runs handlers.

A handler that runs past its timeout is stopped for real: its child is killed (SIGKILL) and
replaced, and the attempt fails with a timeout error. A child that dies on its own (a crash,
``os._exit``) fails the attempt it was running and is replaced too.

Children are started with ``spawn`` and import the flows from ``app_ref`` (``"pkg.module:app"``)
when one is given, which is what the CLI does; without it they are forked and inherit the flows
of this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from pgflow_kombu.worker.execution import FlowLike, Result, execute
from pgflow_kombu.worker.pools.base import Attempt, OutcomeSink, PendingQueue, SlotPool
from pgflow_kombu.worker.tasks import ClaimedTask, Outcome

__all__ = ["ProcessPool"]

log = logging.getLogger("pgflow_kombu.worker")

CHILD_START_TIMEOUT = 120.0


def _child_main(conn: Connection, source: Any, loglevel: int) -> None:
    """Body of a child: load the flows, say ready, then run tasks until told to stop."""
    # The parent decides when a child stops (it kills it when it must): a SIGTERM or Ctrl-C sent
    # to the whole process group must not cut a running handler short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=loglevel, format="%(levelname)s %(name)s: %(message)s")
    try:
        if isinstance(source, str):
            from pgflow_kombu.worker.loading import load_flows

            flows: Mapping[str, FlowLike] = load_flows(source)
        else:
            flows = source
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        conn.send(execute(flows, task))


class _Child:
    """A child process and our end of its pipe."""

    def __init__(self, ctx: Any, source: Any, loglevel: int, name: str) -> None:
        ours, theirs = ctx.Pipe(duplex=True)
        self.conn: Connection = ours
        # kill() runs from the slot thread and from terminate() at once; a Connection's close is
        # not thread-safe, and a second close of its descriptor number would close whatever the
        # process opened under that number since (an event loop's self-pipe, a socket).
        self._close_lock = threading.Lock()
        self.process = ctx.Process(
            target=_child_main, args=(theirs, source, loglevel), name=name, daemon=True
        )
        self.process.start()
        theirs.close()

    def wait_ready(self, timeout: float) -> None:
        if not self.conn.poll(timeout):
            self.kill()
            raise RuntimeError(f"handler process did not start within {timeout:g} s")
        try:
            kind, detail = self.conn.recv()
        except EOFError:
            raise RuntimeError(
                f"handler process exited while starting (code {self.process.exitcode})"
            ) from None
        if kind != "ready":
            self.kill()
            raise RuntimeError(f"handler process could not load the flows: {detail}")

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        with self._close_lock:
            if not self.conn.closed:
                with contextlib.suppress(OSError):
                    self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.process.join(timeout=2)
        self.kill()


class ProcessPool(SlotPool):
    kind = "processes"

    def __init__(
        self,
        flows: Mapping[str, FlowLike],
        concurrency: int,
        sink: OutcomeSink,
        *,
        app_ref: str | None = None,
        loglevel: int = logging.WARNING,
    ) -> None:
        super().__init__(concurrency, sink)
        self._source: Any = app_ref if app_ref else flows
        self._ctx = multiprocessing.get_context("spawn" if app_ref else "fork")
        self._loglevel = loglevel
        self._pending = PendingQueue()
        self._threads: list[threading.Thread] = []
        self._children: list[_Child | None] = []
        self._serial = 0

    def _new_child(self) -> _Child:
        self._serial += 1
        child = _Child(self._ctx, self._source, self._loglevel, f"pgflow-handler-{self._serial}")
        child.wait_ready(CHILD_START_TIMEOUT)
        return child

    def start(self) -> None:
        """Start every child (in parallel) and its slot thread; raises if a child cannot load."""
        children = [
            _Child(self._ctx, self._source, self._loglevel, f"pgflow-handler-{i + 1}")
            for i in range(self.concurrency)
        ]
        self._serial = self.concurrency
        try:
            for child in children:
                child.wait_ready(CHILD_START_TIMEOUT)
        except BaseException:
            for child in children:
                child.kill()
            raise
        for i, child in enumerate(children):
            self._children.append(child)
            thread = threading.Thread(
                target=self._slot, args=(i,), name=f"pgflow-slot-{i + 1}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def submit(self, task: ClaimedTask) -> None:
        self._pending.put(task)

    def close(self) -> list[ClaimedTask]:
        return self._pending.close()

    def terminate(self) -> None:
        self.close()
        for child in list(self._children):
            if child is not None:
                child.kill()

    def kill(self) -> None:
        """SIGKILL every child now, without waiting (a forced exit of the worker)."""
        for child in list(self._children):
            if child is not None and child.process.is_alive():
                child.process.kill()

    def _slot(self, index: int) -> None:
        try:
            while True:
                task = self._pending.get()
                if task is None:
                    return
                if not self._may_start(task):
                    continue
                self._take_slot(task)
                self._finish_slot(self._run(index, task))
        finally:
            child = self._children[index]
            if child is not None:
                child.stop()

    def _replace(self, index: int) -> None:
        old = self._children[index]
        if old is not None:
            old.kill()
        self._children[index] = None
        self.stats.replaced += 1
        self._children[index] = self._new_child()

    def _run(self, index: int, task: ClaimedTask) -> Outcome:
        attempt = Attempt(task)
        child = self._children[index]
        assert child is not None
        bare = dataclasses.replace(task, delivery=None, cancel=None)
        try:
            child.conn.send(bare)
            ready = child.conn.poll(max(0.0, attempt.deadline - time.monotonic()))
            result: Result | None = child.conn.recv() if ready else None
        except (EOFError, OSError):
            code = child.process.exitcode
            self._safe_replace(index)
            return Outcome(
                task,
                error=f"WorkerLostError: the process running the handler exited (code {code})",
                duration=time.monotonic() - attempt.started,
            )
        if result is None:
            self.stats.timed_out += 1
            log.warning(
                "%s (run %s, attempt %d) ran past its %g s timeout: its process was killed",
                task.label,
                task.run_id,
                task.attempt,
                task.timeout,
                extra={"event": "task_timeout", "run_id": task.run_id},
            )
            self._safe_replace(index)
            out = attempt.timeout_outcome()
            return dataclasses.replace(out, error=f"{out.error} (its process was killed)")
        return attempt.outcome(result)

    def _safe_replace(self, index: int) -> None:
        try:
            self._replace(index)
        except Exception:
            log.exception("could not replace a handler process; retrying in 1 s")
            time.sleep(1)
            self._replace(index)
