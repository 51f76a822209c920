"""Flow, step and task options are declared once (flows/keywords.py): every definition
function takes the same names, passes them on whole, and refuses a name it does not take."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from pgflow_kombu import PgFlow
from pgflow_kombu.flows import Flow, chain, define_flow, task
from pgflow_kombu.flows.keywords import (
    FlowKeywords,
    StepKeywords,
    StepOptionKeywords,
    TaskKeywords,
    pick,
)


def double(x: int) -> int:
    return 2 * x


def _step(**options: Any) -> object:
    flow = Flow("f")
    return flow.step(**options)(double)


def _map(**options: Any) -> object:
    flow = Flow("f")
    return flow.map(**options)(double)


@pytest.mark.parametrize(
    ("define", "where"),
    [
        (lambda **o: Flow("f", **o), "Flow()"),
        (_step, "add_step()"),
        (_map, "add_step()"),
        (lambda **o: task(**o)(double), "Task()"),
        (lambda **o: PgFlow().task(**o)(double), "Task()"),
        (lambda **o: PgFlow().flow("f", **o), "Flow()"),
        (lambda **o: chain("c", task(double), **o), "Flow()"),
        (lambda **o: define_flow("d", steps=[{"slug": "a"}], **o), "define_flow()"),
        (lambda **o: task(double).s().set(**o), "set()"),
    ],
)
def test_a_misspelt_option_is_refused_by_name(define: Callable[..., object], where: str) -> None:
    with pytest.raises(
        TypeError, match=rf"{re.escape(where)} got unexpected keyword argument\(s\) retries"
    ):
        define(retries=3)


def test_app_task_takes_every_task_option_through_flows_task() -> None:
    app = PgFlow()
    options: TaskKeywords = {
        "max_attempts": 5,
        "base_delay": 2,
        "timeout": 9,
        "start_delay": 4,
        "max_concurrency": 2,
        "rate_limit": "10/m",
        "concurrency_key": "customer",
        "priority": 7,
    }
    made = app.task(**options)(double)
    bare = task(**options)(double)
    for each in (made, bare):
        step = each.flow.steps[0]
        assert each.flow.options.as_dict() == {"max_attempts": 5, "base_delay": 2, "timeout": 9}
        assert step.options.as_dict() == {"start_delay": 4}
        assert each.options.as_dict() == {
            k: options[k] for k in ("max_attempts", "base_delay", "timeout", "start_delay")
        }
        assert (each.flow.limits.max_concurrency, each.flow.limits.priority) == (2, 7)
        assert each.flow.limits.rate_limit == "10/m"
    assert app.get_flow("double") is made.flow


def test_pick_keeps_what_a_narrower_set_of_options_declares() -> None:
    given: StepKeywords = {"timeout": 3, "start_delay": 1, "if_": {"a": 1}}
    assert pick(given, StepOptionKeywords) == {"timeout": 3, "start_delay": 1}
    assert pick(given, FlowKeywords) == {"timeout": 3}
