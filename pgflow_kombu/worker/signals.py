"""Signals of a worker run on the main thread: the first SIGTERM/SIGINT stops gracefully, a
second SIGINT exits the process at once."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

from pgflow_kombu.worker.status import ExitCode

__all__ = ["install_stop_signals"]

log = logging.getLogger("pgflow_kombu.worker")


def install_stop_signals(
    request_stop: Callable[[], None],
    describe: Callable[[], str],
    on_force: Callable[[], None] | None = None,
) -> Callable[[], None]:
    """Route SIGTERM/SIGINT to ``request_stop``; returns a function restoring the old handlers.

    Does nothing off the main thread (Python delivers signals there only). ``describe`` says
    what the stop waits for, for the log line; ``on_force`` runs before a forced exit (to kill
    handler processes, which would otherwise finish their task unseen).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    received = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        received += 1
        if received > 1 and signum == signal.SIGINT:
            os.write(2, b"pgflow-kombu worker: second interrupt, exiting now\n")
            if on_force is not None:
                with contextlib.suppress(Exception):
                    on_force()
            os._exit(ExitCode.FORCED)
        if received == 1:
            log.warning(
                "%s received: no new tasks; %s (press Ctrl-C again to exit at once)",
                signal.Signals(signum).name,
                describe(),
                extra={"event": "shutdown_requested"},
            )
        request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
