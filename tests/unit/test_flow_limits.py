"""Flow-control options: their checks, what is stored for them, and the keys of a run."""

from __future__ import annotations

from typing import Any

import pytest

from pgflow_kombu import PgFlow, Reject
from pgflow_kombu.errors import FlowDefinitionError, FlowInputError, PgFlowError
from pgflow_kombu.flows import Flow, chain
from pgflow_kombu.flows.options import parse_rate
from pgflow_kombu.flows.task import Task


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/m", (100, 60.0)),
        ("5/s", (5, 1.0)),
        ("10/30s", (10, 30.0)),
        ("1000/h", (1000, 3600.0)),
        (" 3 / 2 minutes ", (3, 120.0)),
    ],
)
def test_rates_are_parsed(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text, "here") == expected


@pytest.mark.parametrize("text", ["", "100", "0/s", "-1/s", "5/d", "5/0s", "many/m", 5])
def test_bad_rates_are_refused(text: Any) -> None:
    with pytest.raises(FlowDefinitionError, match="rate_limit"):
        parse_rate(text, "here")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_concurrency": 0}, "max_concurrency must be a positive integer"),
        ({"max_concurrency": True}, "max_concurrency must be a positive integer"),
        ({"max_concurrency": 2**31}, "max_concurrency must be a positive integer"),
        ({"rate_limit": "fast"}, "rate_limit must look like"),
        ({"concurrency_key": "customer"}, "needs max_concurrency or rate_limit"),
        ({"max_concurrency": 1, "concurrency_key": 5}, "concurrency_key must be"),
        ({"max_concurrency": 1, "concurrency_key": ""}, "concurrency_key must be"),
        ({"priority": "high"}, "priority must be an integer"),
    ],
)
def test_bad_flow_limits_are_refused_naming_the_flow(options: dict[str, Any], message: str) -> None:
    with pytest.raises(FlowDefinitionError, match=message) as caught:
        Flow("limited", **options)
    assert "flow 'limited'" in str(caught.value)


def test_a_step_has_no_priority_but_takes_the_other_limits() -> None:
    flow = Flow("staged")
    with pytest.raises(TypeError):
        flow.add_step("a", lambda run: run, priority=1)  # type: ignore[call-arg]
    with pytest.raises(FlowDefinitionError, match="flow 'staged' step 'b'"):
        flow.add_step("b", lambda run: run, max_concurrency=-1)
    flow.add_step("c", lambda run: run, max_concurrency=2, rate_limit="10/s")
    assert flow.get_step("c").limits.max_concurrency == 2


def test_stored_rows_name_each_limited_scope() -> None:
    flow = Flow("shop", max_concurrency=10, concurrency_key="customer", priority=3)

    @flow.step(rate_limit="100/m")
    def charge(run: dict[str, Any]) -> int:
        return 1

    @flow.step
    def free(charge: int) -> int:
        return charge

    assert flow.limit_rows() == {
        "": {
            "max_concurrency": 10,
            "rate_count": None,
            "rate_period": None,
            "keyed": True,
            "key_field": "customer",
            "priority": 3,
        },
        "charge": {
            "max_concurrency": None,
            "rate_count": 100,
            "rate_period": 60.0,
            "keyed": False,
            "key_field": None,
            "priority": None,
        },
    }
    assert Flow("plain").limit_rows() == {}


def test_run_keys_come_from_a_field_or_a_function_of_the_run_input() -> None:
    flow = Flow("keys", max_concurrency=1, concurrency_key="customer")

    @flow.step(max_concurrency=1, concurrency_key=lambda run: run["region"].upper())
    def fetch(run: dict[str, Any]) -> int:
        return 1

    assert flow.run_keys({"customer": "acme", "region": "eu"}) == {"": "acme", "fetch": "EU"}
    assert flow.run_keys({"customer": 7, "region": "us"}) == {"": "7", "fetch": "US"}
    assert flow.run_keys({"region": "us"})[""] == ""  # a missing field: one shared group


def test_task_and_app_options_reach_the_flow_and_a_chain_step() -> None:
    app = PgFlow("postgresql://localhost/unused")

    @app.task(max_concurrency=3, rate_limit="5/s", concurrency_key="user", priority=2)
    def send(user: str) -> str:
        return user

    assert send.flow.limits.max_concurrency == 3
    assert send.flow.limits.priority == 2
    assert set(send.flow.limit_rows()) == {""}
    flow = chain("pipeline", send, send.s())
    assert {s.limits.max_concurrency for s in flow.steps} == {3}


def test_a_run_priority_must_be_an_integer() -> None:
    task = Task(lambda n: n, name="prio")
    app = PgFlow("postgresql://localhost/unused")
    app.register(task)
    with pytest.raises(FlowInputError, match="priority must be an integer"):
        app.client.start_flow("prio", {"n": 1}, priority="urgent")  # type: ignore[arg-type]


def test_reject_is_a_pgflow_error_users_subclass() -> None:
    class Declined(Reject):
        pass

    assert issubclass(Declined, PgFlowError)


def test_an_eager_reject_is_not_retried_and_when_exhausted_still_applies() -> None:
    from pgflow_kombu.flows.eager import eager_result

    calls: list[int] = []
    flow = Flow("optional", max_attempts=3)

    @flow.step(when_exhausted="skip")
    def enrich(run: dict[str, Any]) -> int:
        calls.append(1)
        raise Reject("no such customer")

    result = eager_result(flow, {"id": 1}, retries=True)
    assert calls == [1]  # one attempt of three
    assert result.statuses["enrich"] == "skipped"
    assert result.error is None
