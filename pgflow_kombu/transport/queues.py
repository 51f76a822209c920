"""What a transport knows about the queues it touches (names, auto-delete, message TTL)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pgflow_kombu.transport.names import channel_name, pgmq_name, table_name

Loader = Callable[[str], "tuple[bool, dict[str, Any]] | None"]


@dataclass(frozen=True)
class QueueInfo:
    name: str
    pgmq: str
    table: str
    channel: str
    auto_delete: bool = False
    ttl_ms: float | None = None


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
        ttl_ms=_ttl(arguments or {}),
    )


def _ttl(arguments: Mapping[str, Any]) -> float | None:
    value = arguments.get("x-message-ttl")
    if value is None or isinstance(value, bool):
        return None
    try:
        return max(float(value), 0.0)
    except (TypeError, ValueError):
        return None


class QueueRegistry:
    """Per-transport cache; a queue's record is read from the database once, on first use."""

    def __init__(self) -> None:
        self._infos: dict[str, QueueInfo] = {}
        self._ensured: set[str] = set()
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
            if info is not None:
                self._ensured.discard(info.pgmq)

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
