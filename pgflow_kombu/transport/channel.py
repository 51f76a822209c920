"""The kombu channel: declarations and publishing (consuming lives in ``consuming.py``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

from amqp.protocol import queue_declare_ok_t
from kombu.exceptions import ChannelError
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.transport.virtual.base import (
    NOT_EQUIVALENT_FMT,
    UNDELIVERABLE_FMT,
    NotEquivalentError,
    UndeliverableWarning,
)

from pgflow_kombu.db.errors import UNDEFINED_TABLE
from pgflow_kombu.errors import DatabaseError
from pgflow_kombu.transport import store
from pgflow_kombu.transport.consuming import ConsumingChannel
from pgflow_kombu.transport.messages import prepare_envelope, topic_pattern

__all__ = ["Channel"]


class Channel(ConsumingChannel):
    """A kombu channel on pgmq queues; exchanges and bindings live in schema ``pgflow_kombu``."""

    supports_fanout = True

    # -- exchanges -------------------------------------------------------------------------

    def exchange_declare(
        self,
        exchange: str | None = None,
        type: str = "direct",
        durable: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
        passive: bool = False,
    ) -> None:
        kind = type or "direct"
        name = exchange or f"amq.{kind}"
        if passive:
            with self.db() as conn:
                known = store.exchange_type(conn, name)
            if known is None:
                raise ChannelError(
                    f"NOT_FOUND - no exchange {name!r} in vhost {self._vhost()!r}",
                    (50, 10),
                    "Channel.exchange_declare",
                    "404",
                )
            self._remember_exchange(name, known, durable, auto_delete, arguments)
            return
        with self.db() as conn:
            existing = store.declare_exchange(
                conn,
                name,
                kind,
                durable=durable,
                auto_delete=auto_delete,
                arguments=arguments or {},
            )
        if existing != kind:
            raise NotEquivalentError(NOT_EQUIVALENT_FMT.format(name, self._vhost()))
        self._remember_exchange(name, kind, durable, auto_delete, arguments)

    def _vhost(self) -> str:
        return str(getattr(self.connection.client, "virtual_host", None) or "/")

    def _remember_exchange(
        self,
        name: str,
        kind: str,
        durable: bool,
        auto_delete: bool,
        arguments: dict[str, Any] | None,
    ) -> None:
        self.state.exchanges[name] = {
            "type": kind,
            "durable": durable,
            "auto_delete": auto_delete,
            "arguments": arguments or {},
            "table": [],
        }

    def exchange_delete(self, exchange: str, if_unused: bool = False, nowait: bool = False) -> None:
        with self.db() as conn:
            if if_unused and store.exchange_in_use(conn, exchange):
                return
            store.delete_exchange(conn, exchange)
        self.state.exchanges.pop(exchange, None)

    def typeof(self, exchange: str, default: str = "direct") -> Any:
        try:
            kind = self.state.exchanges[exchange]["type"]
        except KeyError:
            with self.db() as conn:
                kind = store.exchange_type(conn, exchange) or default
        return self.exchange_types[kind]

    def get_table(self, exchange: str) -> list[tuple[str, str, str]]:
        with self.db() as conn:
            return store.exchange_bindings(conn, exchange)

    def list_bindings(self) -> Iterator[tuple[str, str, str]]:
        with self.db() as conn:
            rows = store.all_bindings(conn)
        return iter(rows)

    # -- queues ----------------------------------------------------------------------------

    def prepare_queue_arguments(
        self, arguments: dict[str, Any] | None, **kwargs: Any
    ) -> dict[str, Any]:
        # kombu's Queue(expires=..., message_ttl=...) become x-expires / x-message-ttl (ms),
        # as for AMQP brokers.
        prepared: dict[str, Any] = to_rabbitmq_queue_arguments(arguments or {}, **kwargs)
        return prepared

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        arguments = dict(kwargs.get("arguments") or {})
        auto_delete = bool(kwargs.get("auto_delete"))
        info = self.connection.queues.declare(queue, auto_delete, arguments)
        self.ensure_queue(info, cached=False)
        with self.db() as conn:
            store.record_queue(conn, queue, info.pgmq, auto_delete, arguments, info.expires_ms)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        info = self.queue_info(queue)
        with self.db() as conn:
            return store.queue_exists(conn, info.table)

    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any) -> Any:
        if passive and queue:
            # Checks, and renews an expiring queue, without touching what it was declared with.
            if not self._has_queue(queue):
                raise ChannelError(
                    f"NOT_FOUND - no queue {queue!r} in vhost {self._vhost()!r}",
                    (50, 10),
                    "Channel.queue_declare",
                    "404",
                )
            if self.queue_info(queue).expires_ms is not None:
                with self.db() as conn:
                    store.touch_queue(conn, queue, 0.0)
            return queue_declare_ok_t(queue, self._size(queue), 0)
        result = super().queue_declare(queue, passive, **kwargs)  # type: ignore[no-untyped-call]
        return queue_declare_ok_t(result.queue, result.message_count, 0)

    def queue_delete(
        self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any
    ) -> None:
        info = self.queue_info(queue)
        if if_empty and self._size(queue):
            return
        with self.db() as conn:
            deleted = store.delete_queue(conn, queue, info.pgmq, if_unused=if_unused)
        if deleted:
            self.connection.queues.forget(queue)

    def queue_bind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        info = self.queue_info(queue)
        routing_key = routing_key or ""
        with self.db() as conn:
            store.bind(
                conn,
                exchange=exchange or "amq.direct",
                routing_key=routing_key,
                queue=queue,
                pgmq_queue=info.pgmq,
                pattern=topic_pattern(routing_key),
                arguments=arguments or {},
            )

    def queue_unbind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        with self.db() as conn:
            store.unbind(
                conn, exchange=exchange or "amq.direct", routing_key=routing_key or "", queue=queue
            )

    def _size(self, queue: str) -> int:
        info = self.queue_info(queue)
        with self.db() as conn:
            return store.size(conn, info.table) if store.queue_exists(conn, info.table) else 0

    def _purge(self, queue: str) -> int:
        info = self.queue_info(queue)
        with self.db() as conn:
            return store.purge(conn, info.table)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self.queue_delete(queue)

    # -- publishing ------------------------------------------------------------------------

    def encode_body(self, body: Any, encoding: str | None = None) -> tuple[Any, str | None]:
        # Envelopes are stored as JSON, which has no bytes: binary bodies always go as base64.
        if isinstance(body, bytes | bytearray) and (not encoding or encoding.lower() == "utf-8"):
            encoding = "base64"
        encoded: tuple[Any, str | None] = super().encode_body(body, encoding)  # type: ignore[no-untyped-call]
        return encoded

    def basic_publish(
        self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any
    ) -> None:
        self._inplace_augment_message(message, exchange, routing_key)  # type: ignore[no-untyped-call]
        text, delay = prepare_envelope(message, eta_in_queue=self.options.eta_in_queue)
        if not exchange:
            self.put_text(routing_key, text, delay)
            return
        with self.db() as conn:
            delivered = store.publish(conn, exchange, routing_key or "", text, delay)
        if not delivered and self.deadletter_queue:
            warnings.warn(
                UndeliverableWarning(
                    UNDELIVERABLE_FMT.format(exchange=exchange, routing_key=routing_key)
                ),
                stacklevel=2,
            )
            self.put_text(self.deadletter_queue, text, delay)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        text, delay = prepare_envelope(message, eta_in_queue=self.options.eta_in_queue)
        self.put_text(queue, text, delay)

    def put_text(self, queue: str, text: str, delay: float) -> None:
        """Store one message in ``queue``, creating the queue when it does not exist yet."""
        info = self.queue_info(queue)
        try:
            with self.db() as conn:
                store.put(conn, info.table, text, delay)
        except DatabaseError as exc:
            if exc.sqlstate != UNDEFINED_TABLE:
                raise
            self.connection.queues.forget_ensured(info.pgmq)
            self.ensure_queue(info)
            with self.db() as conn:
                store.put(conn, info.table, text, delay)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        transport = self.connection
        # Acks not written now come back after the visibility timeout: at-least-once.
        with suppress(Exception):
            self.flush_acks()
        try:
            super().close()  # type: ignore[no-untyped-call]
        finally:
            if transport is not None:
                self.release_connections(transport)
