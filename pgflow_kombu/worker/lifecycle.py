"""Starting and stopping a worker: serving from the caller's thread (with stop signals) or a
background thread, a graceful stop, and the shutdown that lets running handlers finish.

A mixin of :class:`~pgflow_kombu.worker.worker.Worker`, which creates the attributes declared
here and defines the steps declared as callables (startup, the loop, teardown).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.worker.handoff import TaskHandoff
from pgflow_kombu.worker.scheduler import Scheduler
from pgflow_kombu.worker.signals import install_stop_signals
from pgflow_kombu.worker.status import ExitCode

__all__ = ["Lifecycle"]

log = logging.getLogger("pgflow_kombu.worker")


class Lifecycle(TaskHandoff):
    """The worker's start and stop (see the module docstring)."""

    shutdown_timeout: float
    exit_code: int | None
    scheduler: Scheduler | None
    _stopping: threading.Event
    _started: threading.Event
    _finished: threading.Event
    _startup_error: BaseException | None
    _thread: threading.Thread | None
    _startup: Callable[[], None]
    _loop: Callable[[], None]
    _teardown: Callable[[], None]

    def run(self) -> int:
        """Serve until stopped (SIGTERM/SIGINT when on the main thread, or :meth:`stop`).

        Returns an :class:`ExitCode`. The first signal stops claiming and lets running handlers
        finish within ``shutdown_timeout``; a second SIGINT exits the process at once.
        """
        restore = install_stop_signals(
            self.request_stop, self._stop_description, on_force=self._pool.kill
        )
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

    def _stop_description(self) -> str:
        return f"waiting up to {self.shutdown_timeout:g} s for {self._pool.running} running task(s)"

    # -- serving and shutdown ------------------------------------------------------------------

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

    def _shutdown(self) -> int:
        """Graceful stop; returns how many tasks were left for stalled-task recovery."""
        deadline = time.monotonic() + self.shutdown_timeout
        if self.scheduler is not None:  # no new runs from a worker that is going away
            self.scheduler.stop()
        if self._source is not None:
            with contextlib.suppress(Exception):
                self._source.stop_consuming()
        unstarted = self._pool.close()
        if unstarted and self._claims.release(unstarted):
            self._held -= len(unstarted)
            if self._source is not None:
                self._source.ack([t.delivery for t in unstarted])
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
