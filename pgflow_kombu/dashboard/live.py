"""The live feed: one LISTEN connection per dashboard process, fanned out to every browser.

The database notifies ``pgflow_kombu_step`` (``<run_id>:<step_slug>:<status>``, a step's status
changed) and ``pgflow_kombu_run`` (``<run_id>:<status>``, a run finished). :class:`Feed` listens
on both from one asyncio task, started by the first subscriber, and hands each event to every
subscriber's bounded queue. A browser that falls behind gets a ``lagged`` event (it re-reads its
page) instead of holding memory; a lost connection is reopened, and subscribers get ``lagged``
then too, since events may have been missed meanwhile.

Step notifications are sent only while some dashboard is registered in
``pgflow_kombu.dashboard_listeners``: the feed registers while it has subscribers (refreshing
its row every ``REFRESH`` seconds; it expires after ``TTL`` if the process dies) and removes it
when the last browser leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass

import psycopg

from pgflow_kombu.db.connect import DEFAULT_CONNECT_TIMEOUT
from pgflow_kombu.db.queries import query
from pgflow_kombu.db.urls import to_libpq

__all__ = ["Event", "Feed", "parse"]

log = logging.getLogger("pgflow_kombu.dashboard")

QUEUE_SIZE = 256
RECONNECT_DELAY = 1.0
REFRESH = 20.0  # seconds between refreshes of this dashboard's listener row
TTL = 60.0  # seconds the row keeps step notifications on after the last refresh


@dataclass(frozen=True)
class Event:
    kind: str  # "step", "run" or "lagged"
    run_id: str = ""
    step_slug: str = ""
    status: str = ""

    def sse(self) -> str:
        data = {"run_id": self.run_id, "step_slug": self.step_slug, "status": self.status}
        return f"event: {self.kind}\ndata: {json.dumps(data)}\n\n"


def parse(channel: str, payload: str) -> Event | None:
    """The event of one notification (None for a payload of another shape)."""
    if channel == "pgflow_kombu_step":
        run_id, _, rest = payload.partition(":")
        step_slug, _, status = rest.rpartition(":")
        return Event("step", run_id, step_slug, status) if step_slug else None
    if channel == "pgflow_kombu_run":
        run_id, _, status = payload.partition(":")
        return Event("run", run_id, "", status) if status else None
    return None


class Feed:
    def __init__(self, url: str) -> None:
        self.url = url
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        if self._task is None or self._task.done():
            self.listening = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._listen())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(queue)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def publish(self, event: Event) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:  # a slow browser: it reloads rather than holding memory
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(Event("lagged"))

    async def _listen(self) -> None:
        first = True
        params = {"listener_id": uuid.uuid4(), "ttl": TTL}
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    to_libpq(self.url),
                    autocommit=True,
                    application_name="pgflow-kombu-dashboard",
                    connect_timeout=DEFAULT_CONNECT_TIMEOUT,
                )
                async with conn:
                    await conn.execute(query("dashboard.listen"))
                    await conn.execute(query("dashboard.register_listener"), params)
                    self.listening.set()
                    if not first:  # events were missed while the connection was down
                        self.publish(Event("lagged"))
                    first = False
                    while True:
                        while self._subscribers:
                            async for note in conn.notifies(timeout=REFRESH):
                                event = parse(note.channel, note.payload)
                                if event is not None:
                                    self.publish(event)
                            await conn.execute(query("dashboard.register_listener"), params)
                        await conn.execute(query("dashboard.unregister_listener"), params)
                        if not self._subscribers:
                            return  # the last browser left; the next one starts a new task
                        await conn.execute(query("dashboard.register_listener"), params)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await self._unregister(params)
                raise
            except Exception as exc:
                self.listening.clear()
                log.warning("dashboard live feed lost its connection (%s); reconnecting", exc)
                first = False
                await asyncio.sleep(RECONNECT_DELAY)

    async def _unregister(self, params: dict[str, object]) -> None:
        async with await psycopg.AsyncConnection.connect(
            to_libpq(self.url), autocommit=True, connect_timeout=DEFAULT_CONNECT_TIMEOUT
        ) as conn:
            await conn.execute(query("dashboard.unregister_listener"), params)
