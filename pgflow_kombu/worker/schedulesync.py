"""Writing the schedules a worker's code defines to the database when it starts.

A schedule the code no longer defines (for a flow this worker serves) is disabled, not deleted:
see :mod:`pgflow_kombu.client.schedules`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import psycopg

from pgflow_kombu.client.schedules import sync_code_schedules
from pgflow_kombu.db.connect import connect, translate
from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.flows.schedules import ScheduleSpec
from pgflow_kombu.worker.execution import FlowLike

__all__ = ["check_schedules", "sync_schedules"]

log = logging.getLogger("pgflow_kombu.worker")


def check_schedules(
    flows: Mapping[str, FlowLike], schedules: Sequence[ScheduleSpec] | None
) -> list[ScheduleSpec]:
    """The schedules to write: ``schedules``, else those of ``flows``; names must be unique."""
    if schedules is None:
        schedules = [s for flow in flows.values() for s in flow.schedules]
    seen: dict[str, ScheduleSpec] = {}
    for spec in schedules:
        if not isinstance(spec, ScheduleSpec):
            raise ConfigurationError(f"schedules must be ScheduleSpec objects, got {spec!r}")
        other = seen.get(spec.name)
        if other is not None and other != spec:
            raise ConfigurationError(
                f"two schedules are named {spec.name!r} (flows {other.flow_slug!r} and "
                f"{spec.flow_slug!r}): give one another name="
            )
        seen[spec.name] = spec
    return list(seen.values())


def sync_schedules(url: str, specs: Sequence[ScheduleSpec], flow_slugs: Sequence[str]) -> None:
    """Write ``specs``; disable the code schedules of ``flow_slugs`` that ``specs`` lack."""
    with connect(url) as conn:
        try:
            removed = sync_code_schedules(conn, specs, flow_slugs)
        except psycopg.Error as exc:
            raise translate(exc) from exc
    for name in removed:
        log.warning(
            "schedule %r is no longer defined in code: disabled (delete it with "
            "'pgflow-kombu schedules delete %s')",
            name,
            name,
            extra={"event": "schedule_removed", "schedule": name},
        )
