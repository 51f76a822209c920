"""What a transport knows about the queues it touches (names, auto-delete, TTL, expiry)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pgflow_kombu.transport.names import channel_name, pgmq_name, table_name

__all__ = ["Loader", "QueueInfo", "QueueRegistry", "make_info", "touch_period"]

Loader = Callable[[str], "tuple[bool, dict[str, Any]] | None"]


@dataclass(frozen=True)
class QueueInfo:
    name: str
    pgmq: str
    table: str
    channel: str
    auto_delete: bool = False
    ttl_ms: float | None = None
    expires_ms: float | None = None


def make_info(
    name: str, auto_delete: bool = False, arguments: Mapping[str, Any] | None = None
) -> QueueInfo:
    pgmq = pgmq_name(name)
    return QueueInfo(
        name=name,
        pgmq=pgmq,
        table=table_name(pgmq),
        channel=channel_name(pgmq),
        auto_delete=auto_delete,
        ttl_ms=_milliseconds(arguments or {}, "x-message-ttl", minimum=0.0),
        expires_ms=_milliseconds(arguments or {}, "x-expires", minimum=None),
    )


def _milliseconds(arguments: Mapping[str, Any], key: str, *, minimum: float | None) -> float | None:
    """A queue argument in milliseconds; None when absent or unusable (with ``minimum`` None,
    also when not positive)."""
    value = arguments.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    if minimum is None:
        return number if number > 0 else None
    return max(number, minimum)


def touch_period(expires_ms: float) -> float:
    """Milliseconds between two renewals of an expiring queue that a transport uses without
    consuming it (a renewal adds this much to x-expires, so the queue never goes early)."""
    return expires_ms / 4.0


class QueueRegistry:
    """Per-transport cache; a queue's record is read from the database once, on first use."""

    def __init__(self) -> None:
        self._infos: dict[str, QueueInfo] = {}
        self._ensured: set[str] = set()
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def info(self, name: str, load: Loader) -> QueueInfo:
        info = self._infos.get(name)
        if info is None:
            record = load(name)
            info = make_info(name) if record is None else make_info(name, *record)
            with self._lock:
                info = self._infos.setdefault(name, info)
        return info

    def declare(self, name: str, auto_delete: bool, arguments: Mapping[str, Any]) -> QueueInfo:
        info = make_info(name, auto_delete, arguments)
        with self._lock:
            self._infos[name] = info
        return info

    def forget(self, name: str) -> None:
        with self._lock:
            info = self._infos.pop(name, None)
            self._touched.pop(name, None)
            if info is not None:
                self._ensured.discard(info.pgmq)

    def touch_due(self, name: str, expires_ms: float, now: float) -> bool:
        """Whether a use of an expiring queue (basic_get) should renew its expiry now (``now``:
        monotonic seconds): at most every :func:`touch_period`, never once per message."""
        last = self._touched.get(name)
        if last is not None and (now - last) * 1000.0 < touch_period(expires_ms):
            return False
        with self._lock:
            self._touched[name] = now
        return True

    def is_ensured(self, pgmq: str) -> bool:
        return pgmq in self._ensured

    def mark_ensured(self, pgmq: str) -> None:
        with self._lock:
            self._ensured.add(pgmq)

    def forget_ensured(self, pgmq: str) -> None:
        with self._lock:
            self._ensured.discard(pgmq)

    def clear(self) -> None:
        with self._lock:
            self._infos.clear()
            self._ensured.clear()
            self._touched.clear()
