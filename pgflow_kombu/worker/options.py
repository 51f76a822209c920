"""Checking a worker's options, with messages that say what to change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.worker.execution import FlowLike
from pgflow_kombu.worker.pools import POOL_KINDS

__all__ = ["check_options", "select_flows"]


def select_flows(
    flows: Mapping[str, FlowLike], queues: Sequence[str] | None
) -> dict[str, FlowLike]:
    """The flows to serve: all of ``flows``, or those named by ``queues`` (each must exist)."""
    served = dict(flows)
    if queues:
        unknown = sorted(set(queues) - set(served))
        if unknown:
            raise ConfigurationError(
                f"no code for flow(s) {', '.join(unknown)} (known: {', '.join(sorted(served))})"
            )
        served = {q: served[q] for q in queues}
    if not served:
        raise ConfigurationError("a worker needs at least one flow to serve")
    return served


def check_options(
    *,
    concurrency: int,
    pool: str,
    prefetch: int | None,
    shutdown_timeout: float,
    heartbeat_interval: float,
    stalled_after: float,
) -> int:
    """Raise :class:`ConfigurationError` for an unusable option; returns the prefetch to use
    (twice the concurrency unless given)."""
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
    if pool not in POOL_KINDS:
        raise ConfigurationError(f"unknown pool {pool!r}: choose one of {', '.join(POOL_KINDS)}")
    prefetch = 2 * concurrency if prefetch is None else prefetch
    if prefetch < 1:
        raise ConfigurationError(f"prefetch must be >= 1, got {prefetch}")
    for name, value in (
        ("shutdown_timeout", shutdown_timeout),
        ("heartbeat_interval", heartbeat_interval),
        ("stalled_after", stalled_after),
    ):
        if not value > 0:
            raise ConfigurationError(f"{name} must be > 0, got {value}")
    if stalled_after <= heartbeat_interval:
        raise ConfigurationError(
            f"stalled_after ({stalled_after} s) must exceed heartbeat_interval "
            f"({heartbeat_interval} s), or live workers would look dead"
        )
    return prefetch
