"""Schedules as data: a cron expression, a time zone and the input of the runs they start.

Cron expressions are croniter's: five fields (minute hour day month weekday), or six with a
*trailing* seconds field (``"* * * * * */10"``: every 10 s; ``"* * * * * *"``: every second).
Times are computed in the schedule's ``timezone`` (an IANA name, ``zoneinfo``) and stored as
instants. Across daylight-saving changes croniter's rules apply: a wall time that does not
exist (in the spring gap, e.g. 02:30 in Europe/Berlin on the last Sunday of March) fires at the
first time after the gap (03:00); a wall time that occurs twice (the autumn overlap) fires at
both occurrences. Schedule in UTC to avoid both.

Catch-up, for ticks the workers did not start in time (all workers down, or busy): a tick is
*missed* when it is more than ``misfire_grace`` seconds old when a worker gets to it. Ticks
within the grace always start. ``catch_up="none"`` (the default) skips missed ticks;
``"latest"`` starts the newest due tick however old (one run for the gap); ``"all"`` starts
every due tick, at most the newest ``catch_up_limit`` of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.flows.jsondata import Json, NotJsonError, to_json

__all__ = [
    "CATCH_UP_POLICIES",
    "CatchUp",
    "ScheduleSpec",
    "check_cron",
    "due_ticks",
    "next_tick",
    "zone",
]

CatchUp = Literal["none", "latest", "all"]
CATCH_UP_POLICIES: tuple[str, ...] = get_args(CatchUp)

_EPSILON = timedelta(microseconds=1)


def check_cron(cron: str) -> str:
    """The expression, or :class:`ConfigurationError` saying what a valid one looks like."""
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        raise ConfigurationError(
            f"invalid cron expression {cron!r}: five fields (minute hour day month weekday), "
            "or six with seconds last (e.g. '*/5 * * * *', '* * * * * */10')"
        )
    return cron


def zone(name: str) -> ZoneInfo:
    """The time zone named ``name`` (IANA), or :class:`ConfigurationError`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from None


def next_tick(cron: str, tz: str, after: datetime) -> datetime:
    """The first tick strictly after ``after`` (an aware datetime), as a UTC instant."""
    local = after.astimezone(zone(tz))
    result: datetime = croniter(cron, local).get_next(datetime)
    return result.astimezone(timezone.utc)


def _ticks_from(cron: str, tz: str, start: datetime, until: datetime) -> Iterator[datetime]:
    """Ticks t with start <= t <= until, oldest first."""
    it = croniter(cron, (start - _EPSILON).astimezone(zone(tz)))
    while True:
        tick: datetime = it.get_next(datetime)
        if tick > until:
            return
        yield tick.astimezone(timezone.utc)


def due_ticks(
    cron: str,
    tz: str,
    *,
    next_tick_at: datetime,
    now: datetime,
    catch_up: str,
    catch_up_limit: int,
    misfire_grace: float,
) -> tuple[list[datetime], int]:
    """The ticks to start now, oldest first, and how many due ticks are skipped.

    Due ticks lie in ``[next_tick_at, now]`` (``next_tick_at`` is the first tick not yet
    handled). Only a bounded number of ticks is ever enumerated, however long the gap.
    """
    if next_tick_at > now:
        return [], 0
    grace_start = max(next_tick_at, now - timedelta(seconds=misfire_grace))
    if catch_up == "all":
        # The newest catch_up_limit due ticks, found backwards from now.
        it = croniter(cron, (now + _EPSILON).astimezone(zone(tz)))
        newest: list[datetime] = []
        while len(newest) < catch_up_limit:
            tick: datetime = it.get_prev(datetime)
            if tick < next_tick_at:
                break
            newest.append(tick.astimezone(timezone.utc))
        newest.reverse()
        skipped = 0
        if len(newest) == catch_up_limit:
            skipped = _count(cron, tz, next_tick_at, newest[0] - _EPSILON)
        return newest, skipped
    fire = list(_ticks_from(cron, tz, grace_start, now))
    missed_until = (fire[0] if fire else now + _EPSILON) - _EPSILON
    skipped = _count(cron, tz, next_tick_at, missed_until) if grace_start > next_tick_at else 0
    if catch_up == "latest" and not fire and skipped:
        latest: datetime = croniter(cron, (now + _EPSILON).astimezone(zone(tz))).get_prev(datetime)
        fire = [latest.astimezone(timezone.utc)]
        skipped -= 1
    return fire, skipped


def _count(cron: str, tz: str, start: datetime, until: datetime, cap: int = 10_000) -> int:
    """How many ticks lie in [start, until], counted up to ``cap`` (for logs only)."""
    count = 0
    for _ in _ticks_from(cron, tz, start, until):
        count += 1
        if count >= cap:
            break
    return count


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule as code defines it: start ``flow_slug`` with ``input`` at every cron tick.

    ``name`` identifies it in the database (unique across flows; default: the flow slug).
    See the module docstring for the cron syntax, time zones and catch-up policies.
    """

    flow_slug: str
    cron: str
    name: str = ""
    input: Json = field(default_factory=dict)
    timezone: str = "UTC"
    catch_up: CatchUp = "none"
    catch_up_limit: int = 100
    misfire_grace: float = 30.0

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.flow_slug)
        if not isinstance(self.name, str):
            raise ConfigurationError(f"a schedule name must be a string, got {self.name!r}")
        check_cron(self.cron)
        zone(self.timezone)
        if self.catch_up not in CATCH_UP_POLICIES:
            raise ConfigurationError(
                f"schedule {self.name!r}: catch_up must be one of "
                f"{', '.join(CATCH_UP_POLICIES)}, got {self.catch_up!r}"
            )
        limit = self.catch_up_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(
                f"schedule {self.name!r}: catch_up_limit must be an integer >= 1, got {limit!r}"
            )
        grace = self.misfire_grace
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace >= 0:
            raise ConfigurationError(
                f"schedule {self.name!r}: misfire_grace must be a number of seconds >= 0, "
                f"got {grace!r}"
            )
        try:
            object.__setattr__(self, "input", to_json(self.input))
        except NotJsonError as exc:
            raise ConfigurationError(
                f"schedule {self.name!r}: the input is not JSON: {exc}"
            ) from exc

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after``, as a UTC instant."""
        return next_tick(self.cron, self.timezone, after)
