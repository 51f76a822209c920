"""The kombu transport: connections, the blocking ``drain_events`` and the event-loop hooks."""

from __future__ import annotations

import logging
import select
import threading
from contextlib import suppress
from time import monotonic
from typing import Any

import psycopg
from kombu.transport import virtual

from pgflow_kombu.db.connect import poll_only
from pgflow_kombu.db.errors import CONNECTION_ERRORS, translate
from pgflow_kombu.errors import ConnectionFailed, DatabaseError, PgFlowError
from pgflow_kombu.transport import store
from pgflow_kombu.transport.channel import Channel as PgChannel
from pgflow_kombu.transport.connections import Pool
from pgflow_kombu.transport.consuming import ConsumingChannel
from pgflow_kombu.transport.listener import Listener, Waker
from pgflow_kombu.transport.options import Options
from pgflow_kombu.transport.queues import QueueRegistry
from pgflow_kombu.transport.urls import url_from_client

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5432
# How long after a read that emptied a queue it is read once more: longer than an insert's commit.
RECHECK_DELAY = 0.05


class Transport(virtual.Transport):
    """kombu transport ``pgflow://`` (see the package docstring for features and options)."""

    Channel = PgChannel

    # kombu splits pgflow:// URLs into host, port, user... (see transport/urls.py).
    can_parse_url = False
    default_port = DEFAULT_PORT  # type: ignore[assignment]
    driver_type = "pgflow"
    driver_name = "psycopg"

    implements = virtual.Transport.implements.extend(
        asynchronous=True,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
        heartbeats=False,
    )

    # Every psycopg error is translated (db/errors.py): a lost connection is a ConnectionFailed.
    recoverable_connection_errors = CONNECTION_ERRORS
    recoverable_channel_errors = ()
    connection_errors = (
        *virtual.Transport.connection_errors,
        *recoverable_connection_errors,
    )
    channel_errors = (  # type: ignore[assignment]
        *virtual.Transport.channel_errors,
        DatabaseError,
        psycopg.DatabaseError,
    )

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)  # type: ignore[no-untyped-call]
        self.options = Options.from_transport_options(client.transport_options or {})
        self.polling_interval = self.options.polling_interval
        self.url = url_from_client(client)
        # Behind a transaction pooler nothing can LISTEN: consumers read on the polling timer.
        self.poll_only = poll_only()
        self.queues = QueueRegistry()
        self._pools: dict[bool, Pool] = {}
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()
        self._waker: Waker | None = None
        self._waiting = False
        self._delivering: int | None = None
        self._hub: Any = None
        self._hub_thread: int | None = None
        self._hub_timers: list[Any] = []
        self._hub_fds: list[int] = []
        self._next_poll = 0.0
        self._next_extend = 0.0
        self._next_sweep = 0.0
        self._rechecks: dict[tuple[ConsumingChannel, str], float] = {}
        self._recheck_timer: Any = None

    # -- connections -----------------------------------------------------------------------

    def pool(self, consumer: bool) -> Pool:
        pool = self._pools.get(consumer)
        if pool is None:
            pool = self._pools[consumer] = Pool(
                self.url,
                size=self.options.pool_size,
                connect_timeout=float(getattr(self.client, "connect_timeout", None) or 10),
                application_name=self.options.application_name,
                consumer=consumer,
                durable_acks=self.options.durable_acks,
            )
        return pool

    def establish_connection(self) -> Any:
        # Fails here, with a message naming the URL, when the server cannot be reached.
        pool = self.pool(False)
        conn = pool.get()
        pool.put(conn)
        self._waker = self._waker or Waker()
        return super().establish_connection()  # type: ignore[no-untyped-call]

    def close_connection(self, connection: Any) -> None:
        if self._hub is not None:
            self.unregister_from_event_loop(connection, self._hub)
        try:
            super().close_connection(connection)  # type: ignore[no-untyped-call]
        finally:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for pool in self._pools.values():
                pool.close()
            self._pools = {}
            if self._waker is not None:
                self._waker.close()
                self._waker = None
            self.queues.clear()

    def verify_connection(self, connection: Any) -> bool:
        # kombu asks before every drain_events: answer from what is known, without a round trip.
        # A connection that died unnoticed fails the next statement, as a connection error.
        return bool(self._pools) and self._waker is not None

    def listener(self) -> Listener:
        listener = self._listener
        if listener is None:
            with self._listener_lock:
                if self._listener is None:
                    conn = self.pool(False).get()
                    self._listener = Listener(conn)
                listener = self._listener
        return listener

    def listen(self, channel: str) -> None:
        if not self.poll_only:
            self.listener().listen(channel)

    def consumer_pid(self, conn: psycopg.Connection[Any]) -> int:
        """The backend whose life a consumer's registration follows: the listening connection's
        (the consumer lives as long as its LISTEN), or in poll-only mode the one ``conn`` reports
        (a pooler's, which the sweep cannot find: see the transport's docstring)."""
        if self.poll_only:
            return int(conn.info.backend_pid)
        return self.listener().backend_pid()

    def sweep(self) -> None:
        """Delete the queues whose time has come: x-expires ran out, or auto-delete queues whose
        last consumer's connection is gone (``pgflow_kombu.sweep()``, one statement). Never raises:
        a failed sweep is logged and tried again at the next interval."""
        if not self._pools:
            return
        pool = self.pool(False)
        try:
            conn = pool.get()
        except PgFlowError as exc:
            logger.warning("pgflow transport: queue sweep skipped: %s", exc)
            return
        try:
            deleted = store.sweep(conn)
        except psycopg.Error as exc:
            logger.warning("pgflow transport: queue sweep failed: %s", translate(exc))
            return
        finally:
            pool.put(conn)
        for name in deleted:
            self.queues.forget(name)

    def unlisten(self, channel: str) -> None:
        if self._listener is not None:
            # A lost listener connection took its LISTENs with it.
            with suppress(ConnectionFailed):
                self._listener.unlisten(channel)

    # -- delivering ------------------------------------------------------------------------

    def consumes(self, queue: str) -> bool:
        """Whether a consumer of this connection is registered on ``queue``."""
        return queue in self._callbacks

    def deliver(self, payload: Any, queue: str) -> None:
        """Hand a message read from ``queue`` to the consumer registered on it."""
        self._deliver(payload, queue)  # type: ignore[no-untyped-call]

    def defers_acks(self) -> bool:
        """Whether an ack given now may wait for the end of the current delivery cycle."""
        me = threading.get_ident()
        return me in (self._delivering, self._hub_thread)

    def wake(self) -> None:
        """Interrupt a wait for notifications (room was made for more messages)."""
        waker = self._waker  # read once: close_connection may clear it meanwhile
        if waker is not None and (self._waiting or self._hub is not None):
            waker.wake()

    def _channels(self) -> list[PgChannel]:
        return [c for c in list(self.channels) if not c.closed and c.connection is not None]

    def deliver_ready(self) -> int:
        """One delivery cycle over every channel; grouped acks are written at its end."""
        previous, self._delivering = self._delivering, threading.get_ident()
        try:
            return sum(channel.deliver_ready() for channel in self._channels())
        finally:
            self._delivering = previous
            self.flush_acks()

    def flush_acks(self) -> None:
        for channel in self._channels():
            channel.flush_acks()

    def _on_notified(self, channels: set[str]) -> None:
        if channels:
            for channel in self._channels():
                channel.mark_notified(channels)

    def recheck_later(self, channel: ConsumingChannel, queue: str) -> None:
        """Read ``queue`` once more :data:`RECHECK_DELAY` seconds after this read.

        A queue has one pending recheck, which each read moves later: a queue read again and
        again needs no recheck in between, only after its last read (one read per message
        delivered one at a time, not two).
        """
        self._rechecks[(channel, queue)] = monotonic() + RECHECK_DELAY
        on_loop = self._hub is not None and threading.get_ident() == self._hub_thread
        if on_loop and self._recheck_timer is None:
            self._recheck_timer = self._hub.call_later(RECHECK_DELAY, self._on_recheck_timer)

    def _run_rechecks(self, now: float) -> float | None:
        """Mark the queues whose recheck is due; return when the next one is due."""
        due: float | None = None
        for (channel, queue), when in list(self._rechecks.items()):
            if when <= now:
                del self._rechecks[(channel, queue)]
                channel.mark_dirty(queue)
            elif due is None or when < due:
                due = when
        return due

    def _on_recheck_timer(self) -> None:
        self._recheck_timer = None
        now = monotonic()
        due = self._run_rechecks(now)
        if due is not None and self._hub is not None:
            self._recheck_timer = self._hub.call_later(max(0.0, due - now), self._on_recheck_timer)

    def _maintain(self, now: float) -> float:
        """Run the timers that are due (polling, visibility extension, rechecks); return the
        time the next one is due."""
        if now >= self._next_poll:
            self._next_poll = now + self.options.polling_interval
            for channel in self._channels():
                channel.mark_all()
        if now >= self._next_extend:
            self._next_extend = now + self.options.extend_interval
            for channel in self._channels():
                channel.extend_held()
        if now >= self._next_sweep:
            self._next_sweep = now + self.options.sweep_interval
            self.sweep()
        due = min(self._next_poll, self._next_extend, self._next_sweep)
        recheck = self._run_rechecks(now)
        return due if recheck is None else min(due, recheck)

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            due = self._maintain(monotonic())
            if self.deliver_ready():
                return
            now = monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError()
            wait = max(0.0, min(due, deadline if deadline is not None else due) - now)
            self._wait(wait)

    def _wait(self, seconds: float) -> None:
        if self.poll_only or not any(c._consumers for c in self._channels()):
            waker = self._waker
            if waker is None:
                threading.Event().wait(seconds)
                return
            fd = waker.fileno()
            if fd < 0:  # closed meanwhile by close_connection
                return
            self._waiting = True
            try:
                ready, _, _ = select.select([fd], [], [], seconds)
                if ready:
                    waker.drain()
            finally:
                self._waiting = False
            return
        self._waiting = True
        try:
            self._on_notified(self.listener().wait(seconds, self._waker))
        finally:
            self._waiting = False

    # -- kombu's event loop (Hub) ----------------------------------------------------------

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        self._hub = loop
        self._hub_thread = threading.get_ident()
        self._hub_fds = []
        if not self.poll_only:
            fd = self.listener().fileno()
            self._hub_fds.append(fd)
            loop.add_reader(fd, self.on_readable)
        if self._waker is not None:
            fd = self._waker.fileno()
            self._hub_fds.append(fd)
            loop.add_reader(fd, self._on_waker)
        loop.on_tick.add(self.on_tick)
        self._hub_timers = [
            loop.call_repeatedly(self.options.polling_interval, self._on_poll_timer),
            loop.call_repeatedly(self.options.extend_interval, self._on_extend_timer),
            loop.call_repeatedly(self.options.sweep_interval, self.sweep),
        ]

    def unregister_from_event_loop(self, connection: Any, loop: Any) -> None:
        for fd in self._hub_fds:
            loop.remove_reader(fd)
        self._hub_fds = []
        loop.on_tick.discard(self.on_tick)
        for timer in [*self._hub_timers, self._recheck_timer]:
            if timer is not None:
                timer.cancel()
        self._hub_timers = []
        self._recheck_timer = None  # pending rechecks wait for drain_events
        self._hub = None
        self._hub_thread = None

    # On the loop, messages are read and handed to the consumers only in reader callbacks, which
    # run after the loop's poll. Other parties tick too: Celery's prefork pool, on its tick, asks
    # the loop to write the jobs it holds to its child processes. The ticks run in no set order,
    # so a message handed over during a tick may miss the pool's tick of that iteration and wait
    # in the pool until something else ends the next poll (a timer, up to polling_interval).
    # Handed over in a reader callback, it always precedes the next iteration's ticks.

    def on_readable(self, connection: Any = None, loop: Any = None) -> None:
        """The listener's socket is readable: read the queues that were written to."""
        if self._listener is not None:
            self._on_notified(self._listener.poll())
        self._deliver_wanted()

    def _on_waker(self) -> None:
        """The self-pipe is readable: room was made, or a timer marked queues to read."""
        waker = self._waker
        if waker is not None:
            waker.drain()
        self._deliver_wanted()

    def _deliver_wanted(self) -> None:
        if any(channel.wants_read() for channel in self._channels()):
            self.deliver_ready()

    def on_tick(self) -> None:
        """Every loop iteration, before its poll: write grouped acks; when a queue may hold
        messages that there is room for, end the poll at once (the self-pipe's reader reads)."""
        self.flush_acks()
        if any(channel.wants_read() for channel in self._channels()):
            waker = self._waker
            if waker is None:
                self.deliver_ready()
            else:
                waker.wake()

    def _on_poll_timer(self) -> None:
        for channel in self._channels():
            channel.mark_all()

    def _on_extend_timer(self) -> None:
        for channel in self._channels():
            channel.extend_held()

    # -- kombu plumbing --------------------------------------------------------------------

    def driver_version(self) -> str:
        return str(psycopg.__version__)

    @property
    def default_connection_params(self) -> dict[str, Any]:
        return {"port": self.default_port, "hostname": "localhost"}


__all__ = ["Transport"]
