"""The app's cron schedules: declared in code, written to and read from the database."""

from __future__ import annotations

from typing import Any

from pgflow_kombu.app_base import AppBase
from pgflow_kombu.client import FlowRef
from pgflow_kombu.flows.schedules import CatchUp, ScheduleSpec
from pgflow_kombu.handles import RunHandle
from pgflow_kombu.types import ScheduleInfo

__all__ = ["SchedulesFacade"]


class SchedulesFacade(AppBase):
    """Schedules of the app's flows and those in the database."""

    # -- schedules ---------------------------------------------------------------------------------

    def schedule(
        self,
        flow: FlowRef,
        *,
        cron: str,
        input: Any = None,
        timezone: str = "UTC",
        name: str | None = None,
        catch_up: CatchUp = "none",
        catch_up_limit: int = 100,
        misfire_grace: float = 30.0,
    ) -> ScheduleSpec:
        """Start a run of a registered flow (or task) with ``input`` at every tick of ``cron``.

        The schedule belongs to the code: workers serving the flow write it to the database when
        they start (or call :meth:`sync_schedules`), and disable it once the code drops it. For
        a flow this app does not define, use ``app.client.create_schedule``. See
        :mod:`pgflow_kombu.flows.schedules` for the cron syntax (seconds as a sixth field),
        time zones and the catch-up policies.
        """
        registered = self.get_flow(flow)
        data = registered.prepare_input({} if input is None else input)
        return registered.add_schedule(
            cron,
            input=data,
            timezone=timezone,
            name=name,
            catch_up=catch_up,
            catch_up_limit=catch_up_limit,
            misfire_grace=misfire_grace,
        )

    @property
    def schedules(self) -> list[ScheduleSpec]:
        """The schedules of the registered flows, as defined in code."""
        return [s for f in self._flows.values() for s in f.schedules]

    def sync_schedules(self) -> list[str]:
        """Write this app's schedules to the database now (workers do it when they start);
        returns the names of code schedules of its flows that were disabled."""
        from pgflow_kombu.worker.schedulesync import check_schedules

        specs = check_schedules(self._flows, None)
        return self.client.sync_schedules(specs, flows=list(self._flows))

    def list_schedules(self, *, flow_slug: str | None = None) -> list[ScheduleInfo]:
        """The schedules in the database."""
        return self.client.list_schedules(flow_slug=flow_slug)

    def pause_schedule(self, name: str) -> None:
        self.client.pause_schedule(name)

    def resume_schedule(self, name: str) -> ScheduleInfo:
        return self.client.resume_schedule(name)

    def trigger_schedule(self, name: str) -> RunHandle:
        """Start a run of the schedule now, paused or not."""
        schedule = self.client.get_schedule(name)
        return RunHandle(self.client, self.client.trigger_schedule(name), schedule.flow_slug)
