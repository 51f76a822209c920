"""Execution pools: where handlers run (threads, child processes, or an asyncio loop)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.worker.execution import FlowLike
from pgflow_kombu.worker.pools.asyncio_pool import AsyncioPool
from pgflow_kombu.worker.pools.base import OutcomeSink, Pool, PoolStats
from pgflow_kombu.worker.pools.processes import ProcessPool
from pgflow_kombu.worker.pools.threads import ThreadPool

__all__ = [
    "POOL_KINDS",
    "AsyncioPool",
    "Pool",
    "PoolKind",
    "PoolStats",
    "ProcessPool",
    "ThreadPool",
    "make_pool",
]

PoolKind = Literal["threads", "processes", "asyncio"]
POOL_KINDS: tuple[PoolKind, ...] = ("threads", "processes", "asyncio")


def make_pool(
    kind: str,
    flows: Mapping[str, FlowLike],
    concurrency: int,
    sink: OutcomeSink,
    *,
    app_ref: str | None = None,
    loglevel: int = logging.WARNING,
) -> Pool:
    if kind == "threads":
        return ThreadPool(flows, concurrency, sink)
    if kind == "processes":
        return ProcessPool(flows, concurrency, sink, app_ref=app_ref, loglevel=loglevel)
    if kind == "asyncio":
        return AsyncioPool(flows, concurrency, sink)
    raise ConfigurationError(f"unknown pool {kind!r}: choose one of {', '.join(POOL_KINDS)}")
