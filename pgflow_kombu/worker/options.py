"""The flows a worker serves, with messages that say what to change (its settings are
:class:`~pgflow_kombu.settings.WorkerSettings`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.worker.execution import FlowLike

__all__ = ["select_flows"]


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
