"""A flow's cron schedules as code declares them (the part of :class:`~pgflow_kombu.flows.flow.Flow`
that holds them); the workers serving the flow write them to the database."""

from __future__ import annotations

from typing_extensions import Unpack

from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.flows.keywords import ScheduleKeywords, schedule_spec_of
from pgflow_kombu.flows.schedules import ScheduleSpec

__all__ = ["FlowSchedules"]


class FlowSchedules:
    """The schedules of one flow, unique by name."""

    slug: str
    schedules: list[ScheduleSpec]

    def add_schedule(self, cron: str, **options: Unpack[ScheduleKeywords]) -> ScheduleSpec:
        """Start a run with ``input`` (default ``{}``) at every tick of ``cron`` (see
        :mod:`pgflow_kombu.flows.schedules`); ``name`` (default: the flow slug) must be unique
        among all schedules. Workers serving the flow write it to the database."""
        spec = schedule_spec_of(self.slug, cron, options, "add_schedule()")
        if any(s.name == spec.name for s in self.schedules):
            raise ConfigurationError(
                f"flow {self.slug!r} already has a schedule named {spec.name!r}: pass name=..."
            )
        self.schedules.append(spec)
        return spec
