"""Tasks: single-step flows, argument mapping to the run input, dispatch through a Dispatcher."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from pgflow_kombu.errors import (
    FlowDefinitionError,
    FlowInputError,
    NotBoundError,
    StepInputError,
)
from pgflow_kombu.flows import Dispatcher, Flow, Json, Task, task


class Address(BaseModel):
    to: str
    name: str = "friend"


@dataclass
class FakeDispatcher:
    """Records what would be started."""

    started: list[dict[str, Any]] = field(default_factory=list)

    def start(
        self,
        flow: Flow,
        input: Json,
        *,
        delay_seconds: float | None = None,
        scheduled_at: datetime.datetime | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        self.started.append(
            {"flow": flow.slug, "input": input, "delay": delay_seconds, "at": scheduled_at}
        )
        return f"handle-{len(self.started)}"


@task(max_attempts=5, timeout=30)
def send_email(to: str, subject: str, retries: int = 0) -> dict[str, Any]:
    return {"sent": to, "subject": subject, "retries": retries}


def test_task_is_a_single_step_flow_named_after_the_function() -> None:
    assert isinstance(send_email, Task)
    assert send_email.name == send_email.step_slug == "send_email"
    assert send_email.flow.shape() == {
        "flow_slug": "send_email",
        "options": {"max_attempts": 5, "timeout": 30},
        "steps": [{"slug": "send_email", "deps": [], "step_type": "single", "options": {}}],
    }
    assert send_email.__name__ == "send_email"


def test_calling_the_task_calls_the_function() -> None:
    assert send_email("a@b.c", "hi") == {"sent": "a@b.c", "subject": "hi", "retries": 0}


def test_explicit_name_and_start_delay() -> None:
    def f(x: int) -> int:
        return x

    t = Task(f, name="emails_v2", start_delay=10)
    assert t.flow.slug == "emails_v2"
    assert t.flow.shape()["steps"] == [
        {"slug": "emails_v2", "deps": [], "step_type": "single", "options": {"start_delay": 10}}
    ]
    with pytest.raises(FlowDefinitionError, match="invalid flow slug 'bad-name'"):
        Task(f, name="bad-name")
    with pytest.raises(FlowDefinitionError, match="timeout must be a positive integer"):
        Task(f, timeout=0)


def test_function_named_run_gets_a_valid_slug() -> None:
    def run(x: int) -> int:
        return x

    assert Task(run).name == "run_"


def test_arguments_become_a_json_object_by_parameter_name() -> None:
    assert send_email.build_input("a@b.c", subject="hi") == {"to": "a@b.c", "subject": "hi"}
    assert send_email.build_input(to="a", subject="b", retries=2) == {
        "to": "a",
        "subject": "b",
        "retries": 2,
    }


def test_models_are_serialised_and_validated_by_hint() -> None:
    @task
    def greet(address: Address, when: datetime.date) -> str:
        return f"{address.name}@{when.isoformat()}"

    data = greet.build_input(Address(to="x"), datetime.date(2024, 5, 1))
    assert data == {"address": {"to": "x", "name": "friend"}, "when": "2024-05-01"}
    assert greet.run_eager(Address(to="x"), datetime.date(2024, 5, 1)) == "friend@2024-05-01"
    with pytest.raises(StepInputError) as info:
        greet.build_input({"name": "no to"}, datetime.date(2024, 5, 1))
    assert info.value.field == "address.to"


def test_bad_arguments_are_errors_at_dispatch_time() -> None:
    with pytest.raises(StepInputError, match="arguments do not fit send_email\\(\\)") as info:
        send_email.build_input("a@b.c")
    assert "missing a required argument: 'subject'" in str(info.value)
    with pytest.raises(StepInputError, match="unexpected keyword argument 'cc'"):
        send_email.build_input("a", "b", cc="c")
    with pytest.raises(StepInputError) as info:
        send_email.build_input("a", object())
    assert str(info.value) == (
        "flow 'send_email' step 'send_email': invalid input subject: Input should be a valid string"
    )
    assert info.value.field == "subject"


def test_untyped_argument_that_is_not_json() -> None:
    @task
    def anything(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(StepInputError, match="argument 'x' is not JSON") as info:
        anything.build_input({"a": float("nan")})
    assert info.value.field == "x.a"


def test_var_args_and_var_kwargs_round_trip() -> None:
    @task
    def combine(first: int, *rest: int, scale: int = 1, **labels: str) -> dict[str, Any]:
        return {"sum": (first + sum(rest)) * scale, "labels": labels}

    data = combine.build_input(1, 2, 3, scale=2, color="red")
    assert data == {"first": 1, "rest": [2, 3], "scale": 2, "color": "red"}
    assert combine.flow.run_eager(data) == {"combine": {"sum": 12, "labels": {"color": "red"}}}
    assert combine.run_eager(4) == {"sum": 4, "labels": {}}


def test_positional_only_round_trip() -> None:
    @task
    def sub(a: int, b: int, /) -> int:
        return a - b

    assert sub.build_input(5, 3) == {"a": 5, "b": 3}
    assert sub.run_eager(5, 3) == 2


def test_worker_side_rejects_unexpected_and_missing_fields() -> None:
    step = send_email.flow.get_step("send_email")
    with pytest.raises(StepInputError, match="unexpected field 'cc': no such parameter"):
        step.prepare({"run": {"to": "a", "subject": "b", "cc": "c"}})
    with pytest.raises(StepInputError, match="missing a required argument: 'subject'"):
        step.prepare({"run": {"to": "a"}})
    with pytest.raises(StepInputError, match="must be a JSON object, got list"):
        step.prepare({"run": ["a", "b"]})
    assert step.execute({"run": {"to": "a", "subject": "b"}}) == {
        "sent": "a",
        "subject": "b",
        "retries": 0,
    }


def test_delay_and_apply_async_go_through_the_dispatcher() -> None:
    @task
    def job(n: int) -> int:
        return n

    dispatcher = FakeDispatcher()
    job.bind(dispatcher)
    assert job.delay(1) == "handle-1"
    eta = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    job.apply_async(args=[2], countdown=60)
    job.apply_async(kwargs={"n": 3}, eta=eta)
    assert dispatcher.started == [
        {"flow": "job", "input": {"n": 1}, "delay": None, "at": None},
        {"flow": "job", "input": {"n": 2}, "delay": 60, "at": None},
        {"flow": "job", "input": {"n": 3}, "delay": None, "at": eta},
    ]
    with pytest.raises(FlowInputError, match="not both"):
        job.apply_async(args=[1], countdown=1, eta=eta)
    with pytest.raises(FlowInputError, match="delay must be >= 0 seconds"):
        job.apply_async(args=[1], countdown=-1)


def test_dispatcher_protocol_is_structural() -> None:
    dispatcher: Dispatcher = FakeDispatcher()
    flow = Flow("f")
    flow.bind(dispatcher)
    assert flow.dispatcher is dispatcher
    flow.start({"a": 1}, delay_seconds=5)
    flow.delay(a=2)
    assert [s["input"] for s in dispatcher.started] == [{"a": 1}, {"a": 2}]  # type: ignore[attr-defined]
    with pytest.raises(FlowInputError, match="pass the run input as keyword arguments"):
        flow.delay(1)


def test_unbound_task_delay() -> None:
    @task
    def lonely() -> None:
        return None

    with pytest.raises(NotBoundError, match="flow 'lonely' is not registered with an app"):
        lonely.delay()


def test_output_of_unwraps_the_run_output() -> None:
    assert send_email.output_of({"send_email": 1}) == 1
    with pytest.raises(KeyError):
        send_email.output_of({"other": 1})
