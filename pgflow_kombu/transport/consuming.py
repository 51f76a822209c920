"""The consuming half of the channel: batch reads, deliveries, acks, requeues, visibility.

A channel reads a queue only when it may hold something: right after ``basic_consume``, after a
wake-up notification for the queue's table, after a read that filled its whole batch, after it
made messages of the queue visible again, and on the transport's polling timer (delayed messages
and expired visibility timeouts). Each read takes as many messages as the prefetch count leaves
room for (at most ``read_batch_size``) in delivery order.

Acknowledgements given while the transport is delivering (inside ``drain_events``, or on the
thread of the event loop it is registered with) are grouped: one statement per queue, run before
``drain_events`` returns, or on the next tick of the loop. Acks from other threads run at once.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from itertools import count
from time import monotonic
from typing import TYPE_CHECKING, Any

import psycopg
from kombu.transport import virtual

from pgflow_kombu.db.errors import translate
from pgflow_kombu.errors import ConnectionFailed, PgFlowError
from pgflow_kombu.transport import store
from pgflow_kombu.transport.connections import Connection, is_usable
from pgflow_kombu.transport.messages import Payload, delivered_payload
from pgflow_kombu.transport.names import table_name
from pgflow_kombu.transport.qos import QoS
from pgflow_kombu.transport.queues import QueueInfo, touch_period

if TYPE_CHECKING:
    from pgflow_kombu.transport.transport import Transport

__all__ = ["ConsumingChannel", "PendingKey"]

PendingKey = tuple[str, str]  # (table, pgmq queue)


class ConsumingChannel(virtual.Channel):
    """Database access and consuming; declarations and publishing are in ``channel.Channel``."""

    QoS = QoS
    connection: Transport

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)  # type: ignore[no-untyped-call]
        self.options = connection.options
        self._conns: dict[bool, Connection] = {}
        self._conns_lock = threading.Lock()
        self._noack_queues: set[str] = set()
        self._dirty: set[str] = set()
        self._tags = count(1)
        self._pending: dict[PendingKey, list[int]] = defaultdict(list)
        self._pending_lock = threading.Lock()
        self._rotation = 0
        # Names this channel's consumers in pgflow_kombu.consumers.
        self._owner = uuid.uuid4().hex

    # -- database access -------------------------------------------------------------------

    @contextmanager
    def db(self, *, consumer: bool = False) -> Iterator[Connection]:
        """This channel's connection (``consumer``: the one for reads, acks and visibility)."""
        transport = self.transport()
        conn = self._conns.get(consumer)
        if conn is None:
            with self._conns_lock:
                conn = self._conns.get(consumer)
                if conn is None:
                    conn = self._conns[consumer] = transport.pool(consumer).get()
        try:
            yield conn
        except psycopg.Error as exc:
            if not is_usable(conn):
                self._conns.pop(consumer, None)
            raise translate(exc) from exc

    def release_connections(self, transport: Transport) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, {}
        for consumer, conn in conns.items():
            transport.pool(consumer).put(conn)

    def transport(self) -> Transport:
        """The transport of this channel, while it is open.

        kombu closes channels when it reconnects; one still held elsewhere (a declaration retried
        on its own replaces the channel under a publish in progress) fails as a lost connection,
        so that the caller's retry moves to the new channel.
        """
        transport = self.connection
        if transport is None:
            raise ConnectionFailed("this channel was closed (its connection was closed or lost)")
        return transport

    def queue_info(self, queue: str) -> QueueInfo:
        return self.transport().queues.info(queue, self._queue_record)

    def _queue_record(self, queue: str) -> tuple[bool, dict[str, Any]] | None:
        with self.db() as conn:
            return store.queue_record(conn, queue)

    def ensure_queue(self, info: QueueInfo, *, cached: bool = True) -> None:
        """Create the pgmq queue if needed and install the wake-up trigger (``cached``: once per
        transport; a declaration checks again, the queue may have been dropped since)."""
        queues = self.connection.queues
        if cached and queues.is_ensured(info.pgmq):
            return
        with self.db() as conn:
            store.ensure_queue(conn, info.pgmq)
        queues.mark_ensured(info.pgmq)

    # -- consumers -------------------------------------------------------------------------

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
        info = self.queue_info(queue)
        if queue in self._active_queues:
            self.ensure_queue(info)
        else:
            # Listen before the first read, so that nothing published in between goes unnoticed.
            self.connection.listen(info.channel)
            self._add_consumer(info)
        result = super().basic_consume(  # type: ignore[no-untyped-call]
            queue, no_ack, callback, consumer_tag, **kwargs
        )
        if no_ack:
            self._noack_queues.add(queue)
        self._dirty.add(queue)
        return result

    def basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        was_consumer = consumer_tag in self._consumers
        result = super().basic_cancel(consumer_tag)  # type: ignore[no-untyped-call]
        if queue is None or not was_consumer or queue in self._active_queues:
            return result
        self._noack_queues.discard(queue)
        self._dirty.discard(queue)
        info = self.queue_info(queue)
        self.connection.unlisten(info.channel)
        # A connection lost now leaves the consumer row behind until a sweep finds its backend
        # gone (then an auto-delete queue goes as well).
        with suppress(ConnectionFailed):
            self._remove_consumer(info)
        return result

    def _add_consumer(self, info: QueueInfo) -> None:
        """Count this channel among the consumers of the queue, for as long as the transport's
        listening connection lives; this also (re)creates the pgmq queue if it is missing."""
        with self.db() as conn:
            pid = self.connection.consumer_pid(conn)
            store.add_consumer(conn, info.name, info.pgmq, self._owner, pid)
        self.connection.queues.mark_ensured(info.pgmq)

    def _remove_consumer(self, info: QueueInfo) -> None:
        with self.db() as conn:
            deleted = store.remove_consumer(conn, info.name, self._owner)
        if deleted:  # auto-delete, and this was its last consumer
            self.connection.queues.forget(info.name)

    # -- reading ---------------------------------------------------------------------------

    def room(self) -> int:
        """How many messages one read may take now (0: the prefetch count is reached)."""
        estimate = self.qos.can_consume_max_estimate()
        batch = self.options.read_batch_size
        return batch if estimate is None else min(estimate, batch)

    def mark_notified(self, channels: set[str]) -> None:
        for queue in self._active_queues:
            if self.queue_info(queue).channel in channels:
                self._dirty.add(queue)

    def mark_all(self) -> None:
        self._dirty.update(self._active_queues)

    def mark_dirty(self, queue: str) -> None:
        if queue in self._active_queues:
            self._dirty.add(queue)

    def wants_read(self) -> bool:
        """Whether a queue may hold messages and there is room to take some."""
        return bool(self._consumers and self._dirty) and self.room() > 0

    def deliver_ready(self) -> int:
        """Read the queues that may hold messages and deliver what they hold; return the count."""
        if not self._consumers or not self._dirty:
            return 0
        queues = list(self._active_queues)
        # Only queues still consumed stay marked: a mark left on another would make the event
        # loop wake for it again and again (see Transport.on_tick).
        self._dirty.intersection_update(queues)
        if not self._dirty:
            return 0
        self._rotation = (self._rotation + 1) % len(queues)
        delivered = 0
        for queue in queues[self._rotation :] + queues[: self._rotation]:
            if queue not in self._dirty:
                continue
            if not self.connection.consumes(queue):
                self._dirty.discard(queue)
                continue
            limit = self.room()
            if limit <= 0:
                break
            delivered += self._read_and_deliver(queue, limit)
        return delivered

    def _read(self, info: QueueInfo, limit: int, pop: bool) -> list[store.Row]:
        with self.db(consumer=True) as conn:
            return store.read(
                conn,
                info.table,
                limit=limit,
                visibility_timeout=self.options.visibility_timeout,
                ttl_ms=info.ttl_ms,
                pop=pop,
            )

    def _payload(
        self, queue: str, info: QueueInfo, msg_id: int, read_ct: int, text: str
    ) -> Payload:
        """The kombu message for a row read from ``queue``, with the next delivery tag."""
        payload, _plain = delivered_payload(
            text,
            delivery_tag=next(self._tags),
            queue=queue,
            pgmq_queue=info.pgmq,
            msg_id=msg_id,
            read_ct=read_ct,
        )
        return payload

    def _read_and_deliver(self, queue: str, limit: int) -> int:
        info = self.queue_info(queue)
        rows = self._read(info, limit, queue in self._noack_queues)
        if len(rows) < limit:
            self._dirty.discard(queue)
            if rows:
                # An insert that raced with this read may have skipped its wake-up (see the
                # trigger in 0010_transport.sql): look again shortly.
                self.connection.recheck_later(self, queue)
        deliver = self.connection.deliver
        delivered = 0
        for position, (msg_id, read_ct, text) in enumerate(rows):
            if read_ct is None or text is None:
                continue  # expired: already deleted
            payload = self._payload(queue, info, msg_id, read_ct, text)
            try:
                deliver(payload, queue)
            except BaseException:
                # Hand back what this batch took but never delivered, instead of letting it
                # wait for the visibility timeout.
                rest = [r[0] for r in rows[position + 1 :] if r[1] is not None]
                if rest and queue not in self._noack_queues:
                    with suppress(PgFlowError):  # else they come back after the timeout
                        self._make_visible(info, rest)
                raise
            delivered += 1
        return delivered

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        info = self.queue_info(queue)
        expires = info.expires_ms
        if expires is not None and self.connection.queues.touch_due(queue, expires, monotonic()):
            # A use that renews an expiring queue; at most every touch_period, not per message.
            with self.db() as conn:
                store.touch_queue(conn, queue, touch_period(expires))
        while True:
            rows = self._read(info, 1, no_ack)
            if not rows:
                return None
            msg_id, read_ct, text = rows[0]
            if read_ct is not None and text is not None:
                break
        payload = self._payload(queue, info, msg_id, read_ct, text)
        message = self.Message(payload, channel=self)  # type: ignore[no-untyped-call]
        if not no_ack:
            self.qos.append(message, message.delivery_tag)
        return message

    # -- acknowledgements ------------------------------------------------------------------

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        tags = self._tags_upto(delivery_tag) if multiple else [delivery_tag]
        for tag in tags:
            try:
                message = self.qos.get(tag)
            except KeyError:
                continue
            info = message.delivery_info
            if not info.get("pgmq_plain"):
                self._settle(info["pgmq_queue"], info["pgmq_msg_id"])
            self.qos.ack(tag)

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            message = self.qos.get(delivery_tag)
        except KeyError:
            return
        info = message.delivery_info
        if requeue:
            self.restore_messages([message], plain_too=True)
        elif not info.get("pgmq_plain"):
            self._settle(info["pgmq_queue"], info["pgmq_msg_id"])
        self.qos.ack(delivery_tag)

    def _tags_upto(self, last: Any) -> list[Any]:
        qos: QoS = self.qos
        return qos.tags_upto(last)

    def _settle(self, pgmq_queue: str, msg_id: int) -> None:
        key = (table_name(pgmq_queue), pgmq_queue)
        if self.connection.defers_acks():
            with self._pending_lock:
                self._pending[key].append(msg_id)
            return
        self._run_settle(key, [msg_id])
        self.connection.wake()

    def flush_acks(self) -> None:
        """Run the grouped acknowledgements (one statement per queue)."""
        if not self._pending:
            return
        with self._pending_lock:
            pending, self._pending = self._pending, defaultdict(list)
        for key, ids in pending.items():
            self._run_settle(key, ids)

    def _run_settle(self, key: PendingKey, ids: list[int]) -> None:
        table, pgmq_queue = key
        with self.db(consumer=True) as conn:
            if self.options.ack_mode == "archive":
                store.archive(conn, pgmq_queue, ids)
            else:
                store.delete(conn, table, ids)

    # -- visibility ------------------------------------------------------------------------

    def restore_messages(self, messages: Iterable[Any], *, plain_too: bool = False) -> None:
        """Make unacknowledged messages visible again at once (never by re-inserting them).

        Plain messages are skipped unless ``plain_too`` (an explicit requeue): a pgflow handler
        may still hold them.
        """
        by_queue: dict[str, list[int]] = defaultdict(list)
        for message in messages:
            info = message.delivery_info
            if "pgmq_msg_id" not in info or (info.get("pgmq_plain") and not plain_too):
                continue
            by_queue[info["pgmq_queue"]].append(info["pgmq_msg_id"])
        for pgmq_queue, ids in by_queue.items():
            self._make_visible_in(pgmq_queue, ids)
        if by_queue:
            self.connection.wake()

    def _restore(self, message: Any) -> None:
        self.restore_messages([message])

    def _make_visible(self, info: QueueInfo, ids: list[int]) -> None:
        with self.db(consumer=True) as conn:
            store.make_visible(conn, info.table, ids)
        if info.name in self._active_queues:
            self._dirty.add(info.name)

    def _make_visible_in(self, pgmq_queue: str, ids: list[int]) -> None:
        with self.db(consumer=True) as conn:
            store.make_visible(conn, table_name(pgmq_queue), ids)
        for queue in self._active_queues:
            if self.queue_info(queue).pgmq == pgmq_queue:
                self._dirty.add(queue)

    def extend_held(self) -> None:
        """Push forward the visibility of the envelopes this channel still holds.

        Plain messages are left alone: the pgflow worker sets their visibility itself.
        """
        if self._qos is None:
            return
        by_queue: dict[str, list[int]] = defaultdict(list)
        for message in self.qos.held():
            info = message.delivery_info
            if "pgmq_msg_id" in info and not info.get("pgmq_plain"):
                by_queue[info["pgmq_queue"]].append(info["pgmq_msg_id"])
        for pgmq_queue, ids in by_queue.items():
            with self.db(consumer=True) as conn:
                store.extend(conn, table_name(pgmq_queue), ids, self.options.visibility_timeout)
