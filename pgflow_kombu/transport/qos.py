"""Unacknowledged-message bookkeeping of a channel (kombu's virtual QoS, adapted to pgmq)."""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import virtual

from pgflow_kombu.errors import PgFlowError

__all__ = ["QoS"]

logger = logging.getLogger(__name__)


class QoS(virtual.QoS):
    """Restoring an unacknowledged message does not re-insert it: a kombu envelope is made visible
    again in its queue (one statement per queue), a plain message is left alone (the handler that
    holds it may still be running; its visibility belongs to that handler). When the database
    cannot be reached, nothing is dumped or lost: the messages become visible again when their
    visibility timeout runs out.
    """

    def restore_unacked(self) -> list[tuple[BaseException, Any]]:
        self._flush()  # type: ignore[no-untyped-call]
        messages = list(self._delivered.values())
        self._delivered.clear()
        if not messages:
            return []
        try:
            self.channel.restore_messages(messages)
        except PgFlowError as exc:
            logger.warning(
                "could not restore %d unacknowledged message(s) (%s); they become visible "
                "again when their visibility timeout runs out",
                len(messages),
                exc,
            )
        return []

    def tags_upto(self, last: Any) -> list[Any]:
        """The delivery tags not acknowledged yet up to ``last`` (``basic_ack(multiple=True)``)."""
        return [tag for tag in list(self._delivered) if tag <= last]

    def held(self) -> list[Any]:
        """Delivered messages not acknowledged yet."""
        dirty = self._dirty
        return [m for tag, m in list(self._delivered.items()) if tag not in dirty]
