"""A schedule's keywords are declared once (ScheduleKeywords) and its defaults live in
ScheduleSpec: every way to define a schedule takes the same names, gives the same defaults
and refuses a misspelt name by name."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest

from pgflow_kombu import Client, PgFlow
from pgflow_kombu.flows import Flow
from pgflow_kombu.flows.keywords import ScheduleKeywords
from pgflow_kombu.flows.schedules import ScheduleSpec

URL = "postgresql://nobody@127.0.0.1:1/none"


def _build(run: dict[str, Any]) -> dict[str, Any]:
    return run


def _app_schedule(**options: Any) -> object:
    app = PgFlow(URL)
    app.flow("report").step(slug="build")(_build)
    return app.schedule("report", cron="0 2 * * *", **options)


def _flow_schedule(**options: Any) -> object:
    return Flow("report").add_schedule("0 2 * * *", **options)


def _client_schedule(**options: Any) -> object:
    # The keywords are checked before any connection is made (the URL leads nowhere).
    return Client(URL).create_schedule("report", "0 2 * * *", **options)


@pytest.mark.parametrize(
    ("define", "where"),
    [
        (_app_schedule, "schedule()"),
        (_flow_schedule, "add_schedule()"),
        (_client_schedule, "create_schedule()"),
    ],
)
def test_a_misspelt_schedule_keyword_is_refused_by_name(
    define: Callable[..., object], where: str
) -> None:
    with pytest.raises(
        TypeError, match=rf"{re.escape(where)} got unexpected .* misfire_grase"
    ) as raised:
        define(misfire_grase=5.0)
    # The message lists what it takes, so the right spelling is at hand.
    assert "misfire_grace" in str(raised.value)


@pytest.mark.parametrize("define", [_app_schedule, _flow_schedule])
def test_a_schedule_left_to_its_defaults_gets_the_specs(define: Callable[..., Any]) -> None:
    spec = define()
    defaults = ScheduleSpec(flow_slug="report", cron="0 2 * * *")
    assert spec == defaults
    assert (spec.timezone, spec.catch_up, spec.catch_up_limit, spec.misfire_grace) == (
        "UTC",
        "none",
        100,
        30.0,
    )


def test_every_schedule_keyword_is_a_spec_field_and_is_passed_on() -> None:
    fields = {f.name for f in dataclasses.fields(ScheduleSpec)} - {"flow_slug", "cron"}
    assert set(ScheduleKeywords.__optional_keys__) == fields
    given: dict[str, Any] = {
        "input": {"full": True},
        "timezone": "Europe/Berlin",
        "name": "nightly",
        "catch_up": "all",
        "catch_up_limit": 7,
        "misfire_grace": 2.5,
    }
    for define in (_app_schedule, _flow_schedule):
        spec = define(**given)
        assert {name: getattr(spec, name) for name in given} == given


def test_none_for_input_and_name_means_the_default() -> None:
    spec = _flow_schedule(input=None, name=None)
    assert (spec.input, spec.name) == ({}, "report")  # type: ignore[attr-defined]
