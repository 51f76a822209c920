"""The worker's message source on the ``pgflow://`` kombu transport.

One kombu connection and channel, one consumer on the flow queues (queue name = flow slug). The
transport delivers pgflow's plain pgmq messages as kombu messages whose ``delivery_info`` carries
the queue (``routing_key``) and ``pgmq_msg_id``; it reads them in batches sized by the channel's
QoS, wakes up on NOTIFY, never re-inserts them, leaves their visibility alone when a channel
closes, and their ack costs nothing. The worker acknowledges a message when its task finishes
(or at once when there was no task to claim), so the QoS prefetch count bounds the tasks waiting
or running; before each drain the prefetch count is set to what this channel holds plus the
room the worker has, which keeps that true across reconnections.

Messages are read hidden for ``read_visibility`` seconds (the transport's ``visibility_timeout``),
which the worker sets to its longest step timeout + 2 s (within bounds): the claim then only has
to extend the messages of steps with a longer timeout.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from kombu import connection as kombu_connection
from kombu import entity as kombu_entity
from kombu import messaging as kombu_messaging

from pgflow_kombu.db.errors import describe, is_connection_error
from pgflow_kombu.db.urls import check_url, redact
from pgflow_kombu.errors import ConnectionFailed, DatabaseError, PgFlowError
from pgflow_kombu.transport.urls import kombu_url
from pgflow_kombu.worker.link import Link
from pgflow_kombu.worker.source import Delivery

__all__ = ["KombuSource"]

log = logging.getLogger("pgflow_kombu.worker")

DEFAULT_READ_VISIBILITY = 30.0

# kombu ships partial type hints; its classes are used through Any.
Connection: Any = kombu_connection.Connection
Consumer: Any = kombu_messaging.Consumer
Queue: Any = kombu_entity.Queue


class KombuSource:
    def __init__(
        self,
        url: str,
        *,
        read_visibility: float = DEFAULT_READ_VISIBILITY,
        polling_interval: float = 1.0,
        transport_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = kombu_url(check_url(url))
        self.read_visibility = int(read_visibility)
        self.transport_options = {
            "polling_interval": polling_interval,
            "application_name": "pgflow-kombu-worker",
            **(transport_options or {}),
        }
        self._queues: list[str] = []
        self._prefetch = 1
        self._conn: Any = None
        self._channel: Any = None
        self._consumer: Any = None
        self._buffer: list[Delivery] = []
        self._unacked = 0  # delivered on the current channel and not acknowledged
        self._consuming = False
        self._ignored_envelopes = 0
        self._lost = False  # the last connection broke: the next one is a reconnection

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self, queues: Sequence[str], prefetch: int) -> None:
        self._queues = list(queues)
        self._prefetch = prefetch
        self._consuming = True
        self._connect()

    def _connect(self) -> None:
        options = {"visibility_timeout": self.read_visibility, **self.transport_options}
        conn = Connection(self.url, transport_options=options)
        try:
            conn.connect()
            channel = conn.channel()
            channel.basic_qos(0, self._prefetch, False)
            consumer = Consumer(
                channel,
                queues=[Queue(q, routing_key=q) for q in self._queues],
                on_message=self._on_message,
                no_ack=False,
            )
            consumer.consume()
        except PgFlowError:
            with contextlib.suppress(Exception):
                conn.release()
            raise
        except Exception as exc:
            with contextlib.suppress(Exception):
                conn.release()
            kind = ConnectionFailed if is_connection_error(exc) else DatabaseError
            raise kind(f"cannot consume from {redact(self.url)}: {describe(exc)}") from exc
        self._conn, self._channel, self._consumer = conn, channel, consumer
        self._unacked = 0
        if self._lost:
            self._lost = False
            Link.reconnects += 1

    def _disconnect(self) -> None:
        conn, self._conn, self._channel, self._consumer = self._conn, None, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.release()

    def close(self) -> None:
        self._consuming = False
        self._disconnect()

    def stop_consuming(self) -> None:
        self._consuming = False
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.cancel()

    def wake(self) -> None:
        """Interrupt a drain waiting for notifications (from any thread)."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.transport.wake()

    # -- delivering ----------------------------------------------------------------------------

    def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        if not self._consuming or limit <= 0:
            return []
        if self._conn is None:
            self._connect()
        # Room for exactly `limit` more: the QoS counts what this channel delivered unacked.
        self._channel.basic_qos(0, self._unacked + limit, False)
        self._buffer = []
        try:
            self._conn.drain_events(timeout=timeout)
        except TimeoutError:
            pass
        except PgFlowError:
            self._disconnect()
            raise
        except Exception as exc:
            # Whatever the transport raised, the next fetch starts on a fresh connection.
            self._disconnect()
            self._lost = True
            if is_connection_error(exc):
                raise ConnectionFailed(f"lost the message connection: {describe(exc)}") from exc
            raise DatabaseError(f"reading messages failed: {describe(exc)}") from exc
        found, self._buffer = self._buffer, []
        return found

    def _on_message(self, message: Any) -> None:
        info = message.delivery_info
        self._unacked += 1
        if not info.get("pgmq_plain"):
            # A kombu envelope in a flow queue is not a pgflow task: drop it.
            self._ignored_envelopes += 1
            if self._ignored_envelopes == 1:
                log.warning(
                    "dropping a kombu message found in flow queue %r (flow queues hold pgflow "
                    "task messages only)",
                    info.get("pgmq_queue"),
                )
            self.ack([message])
            return
        # routing_key is the consumed kombu queue, i.e. the flow slug (pgmq_queue is the name
        # pgmq stores it under, which may differ in case).
        queue = info.get("routing_key") or info["pgmq_queue"]
        self._buffer.append(Delivery(queue, int(info["pgmq_msg_id"]), message))

    def ack(self, handles: Sequence[Any]) -> None:
        """Acknowledge messages (free for pgflow's plain messages; returns room to the QoS)."""
        for message in handles:
            if message is None:
                continue
            if message.channel is not self._channel:
                continue  # delivered before a reconnection: nothing left to acknowledge
            with contextlib.suppress(Exception):
                message.ack()
            self._unacked -= 1
