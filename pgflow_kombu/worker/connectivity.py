"""Whether the worker can reach its database, logged once when lost and once when back.

Every connection of the worker (heartbeats, claims, reports, messages) tells the one
:class:`Connectivity` of its worker how its statements went. The first failure logs
``db_unreachable``; the first success after it logs ``db_reconnected``. A failure of a statement
sent before the database was last seen back belongs to the outage that ended and is ignored.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["Connectivity"]

log = logging.getLogger("pgflow_kombu.worker")


class Connectivity:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lost_at: float | None = None
        self._back_at = 0.0

    @property
    def lost(self) -> bool:
        return self._lost_at is not None

    def failed(self, sent_at: float, reason: object) -> None:
        """A statement sent at ``sent_at`` (monotonic) failed for want of a connection."""
        with self._lock:
            if self._lost_at is not None or sent_at < self._back_at:
                return
            self._lost_at = time.monotonic()
        log.warning(
            "database unreachable (%s): no new tasks until it is back; retrying",
            reason,
            extra={"event": "db_unreachable"},
        )

    def succeeded(self) -> None:
        """A statement went through."""
        if self._lost_at is None:
            return
        with self._lock:
            lost_at, self._lost_at = self._lost_at, None
            if lost_at is None:
                return
            self._back_at = time.monotonic()
            down = self._back_at - lost_at
        log.info(
            "database reachable again (unreachable for %.1f s)",
            down,
            extra={"event": "db_reconnected", "down_seconds": round(down, 3)},
        )
