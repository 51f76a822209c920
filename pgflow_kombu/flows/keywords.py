"""The keyword arguments of flow, step and task definitions, typed once.

Every function that takes a flow's or a step's options (``Flow(...)``, ``@flow.step``,
``@task``, ``app.flow``, ``chain``, ``define_flow``, ``upsert_flow``, ...) declares them as
``**options: Unpack[...]`` of one of these, so a type checker knows each name and type, and
:func:`check_keywords` refuses a name that is not one at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from typing_extensions import TypedDict

from pgflow_kombu.flows.conditions import WhenExhausted, WhenUnmet
from pgflow_kombu.flows.options import ConcurrencyKey, FlowOptions, Limits, StepOptions

__all__ = [
    "FlowDataKeywords",
    "FlowKeywords",
    "FlowOptionKeywords",
    "LimitKeywords",
    "StepKeywords",
    "StepOptionKeywords",
    "TaskKeywords",
    "check_keywords",
    "flow_options_of",
    "limits_of",
    "pick",
    "step_options_of",
]


class FlowOptionKeywords(TypedDict, total=False):
    """pgflow's runtime options of a flow (None or left out: ``create_flow``'s default)."""

    max_attempts: int | None
    base_delay: int | None
    timeout: int | None


class StepOptionKeywords(FlowOptionKeywords, total=False):
    """pgflow's runtime options of a step (None or left out: the flow's value)."""

    start_delay: int | None


class LimitKeywords(TypedDict, total=False):
    """Flow control of a flow or a step (see :class:`~pgflow_kombu.flows.options.Limits`)."""

    max_concurrency: int | None
    rate_limit: str | None
    concurrency_key: ConcurrencyKey | None


class FlowKeywords(FlowOptionKeywords, LimitKeywords, total=False):
    """What a flow takes: its options, its limits, its runs' priority and a cron schedule."""

    priority: int | None
    schedule: str | None


class FlowDataKeywords(FlowOptionKeywords, LimitKeywords, total=False):
    """What a flow built from plain data takes (``define_flow``, ``upsert_flow``): its
    options, its limits and its runs' default priority."""

    priority: int | None


class TaskKeywords(StepOptionKeywords, LimitKeywords, total=False):
    """What a task (a one-step flow) takes: its step's options and its flow's limits."""

    priority: int | None
    schedule: str | None


class StepKeywords(StepOptionKeywords, LimitKeywords, total=False):
    """What a step takes: its options, its limits and its condition
    (see :mod:`~pgflow_kombu.flows.conditions`)."""

    if_: Any
    if_not: Any
    when_unmet: WhenUnmet | None
    when_exhausted: WhenExhausted | None


K = TypeVar("K")


def check_keywords(given: Mapping[str, Any], keywords: type[Any], where: str) -> None:
    """Raise :class:`TypeError` (as Python does) for a name ``keywords`` does not declare."""
    known: frozenset[str] = keywords.__optional_keys__ | keywords.__required_keys__
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(
            f"{where} got unexpected keyword argument(s) {', '.join(unknown)} "
            f"(it takes {', '.join(sorted(known))})"
        )


def pick(given: Mapping[str, Any], keywords: type[K]) -> K:
    """The part of ``given`` that ``keywords`` declares (e.g. a task's flow options)."""
    known = cast(Any, keywords).__optional_keys__
    return cast(K, {name: value for name, value in given.items() if name in known})


def flow_options_of(given: FlowOptionKeywords) -> FlowOptions:
    return FlowOptions(given.get("max_attempts"), given.get("base_delay"), given.get("timeout"))


def step_options_of(given: StepOptionKeywords) -> StepOptions:
    return StepOptions(
        given.get("max_attempts"),
        given.get("base_delay"),
        given.get("timeout"),
        given.get("start_delay"),
    )


def limits_of(given: LimitKeywords, priority: int | None = None) -> Limits:
    return Limits(
        given.get("max_concurrency"),
        given.get("rate_limit"),
        given.get("concurrency_key"),
        priority,
    )
