"""Conditional steps without a database: validation, shapes, eager runs."""

from __future__ import annotations

from typing import Any

import pytest

from pgflow_kombu import PgFlow, RunFailed
from pgflow_kombu.errors import ConditionNotMet, FlowDefinitionError, StepInputError
from pgflow_kombu.flows import Flow, define_flow
from pgflow_kombu.flows.conditions import StepCondition, contains
from pgflow_kombu.flows.shapes import compare_shapes


def test_a_pattern_key_must_be_run_or_a_dependency() -> None:
    flow = Flow("f")
    flow.add_step("a")
    with pytest.raises(
        FlowDefinitionError, match=r"key 'kind' is neither 'run'.*\{'run': \{'kind'"
    ):
        flow.add_step("b", if_={"kind": "x"})
    with pytest.raises(FlowDefinitionError, match="if_not key 'z'"):
        flow.add_step("c", depends_on=["a"], if_not={"a": 1, "z": 2})
    flow.add_step("d", depends_on=["a"], if_={"a": {"ok": True}, "run": {"x": 1}})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"if_": [1]}, "if_ must be an object"),
        ({"if_": "x"}, "if_ must be an object"),
        ({"if_": {"run": float("nan")}}, "if_ is not JSON"),
        ({"if_": {"run": 1}, "when_unmet": "ignore"}, "when_unmet must be one of"),
        ({"when_unmet": "fail"}, "when_unmet='fail' needs a condition"),
        ({"when_exhausted": "retry"}, "when_exhausted must be one of"),
    ],
)
def test_bad_condition_options_are_refused_naming_the_step(
    options: dict[str, Any], message: str
) -> None:
    flow = Flow("f")
    with pytest.raises(FlowDefinitionError, match=message) as caught:
        flow.add_step("s", **options)
    assert (caught.value.flow_slug, caught.value.step_slug) == ("f", "s")
    assert "s" not in flow


def test_the_shape_carries_a_condition_only_for_a_conditional_step() -> None:
    flow = Flow("f")

    @flow.step(if_={"run": {"go": True}}, when_unmet="skip-cascade")
    def a(run: Any) -> int:
        return 1

    @flow.map(over="a", when_exhausted="skip")
    def m(x: int) -> int:
        return x

    @flow.step
    def plain(a: int) -> int:
        return a

    steps = flow.shape()["steps"]
    assert steps[0]["condition"] == {
        "if_": {"run": {"go": True}},
        "if_not": None,
        "when_unmet": "skip-cascade",
        "when_exhausted": "fail",
    }
    assert steps[1]["condition"]["when_exhausted"] == "skip"
    assert "condition" not in steps[2]
    again = define_flow("f", steps=flow.shape()["steps"])
    assert again.shape() == flow.shape()
    assert compare_shapes(flow.shape(), again.shape()) == []


def test_an_explicit_default_condition_equals_no_condition() -> None:
    plain = Flow("f")
    plain.add_step("a")
    explicit = define_flow(
        "f", steps=[{"slug": "a", "condition": {"when_unmet": "skip", "when_exhausted": "fail"}}]
    )
    assert explicit.get_step("a").condition == StepCondition()
    assert compare_shapes(plain.shape(), explicit.shape()) == []
    with pytest.raises(FlowDefinitionError, match="unknown condition keys"):
        define_flow("f", steps=[{"slug": "a", "condition": {"if": {"run": 1}}}])


def test_contains_follows_jsonb_containment() -> None:
    assert contains({"a": [1, 2], "b": {"c": 1, "d": 2}}, {"a": [2], "b": {"c": 1}})
    assert not contains({"a": [1, 2]}, {"a": 1})
    assert not contains({"a": 1}, {"a": True})
    assert contains({"a": 1}, {"a": 1.0})
    assert not contains({}, {"a": None})


def test_eager_runs_skip_fail_and_recover_from_exhaustion() -> None:
    flow = Flow("f", max_attempts=1)
    calls: list[str] = []

    @flow.step(if_={"run": {"go": True}})
    def maybe(run: Any) -> str:
        calls.append("maybe")
        return "M"

    @flow.step(when_exhausted="skip")
    def breaks(run: Any) -> str:
        calls.append("breaks")
        raise RuntimeError("no")

    @flow.step
    def join(maybe: str = "none", breaks: str = "none") -> str:
        calls.append("join")
        return maybe + "/" + breaks

    assert flow.run_eager({"go": False}) == {"join": "none/none"}
    assert calls == ["breaks", "join"]
    assert flow.run_eager({"go": True}) == {"join": "M/none"}

    strict = Flow("s")
    strict.add_step("gate", lambda run: 1, if_not={"run": {"stop": True}}, when_unmet="fail")
    with pytest.raises(ConditionNotMet, match="step 'gate': Condition not met"):
        strict.run_eager({"stop": True})


def test_a_parameter_without_default_for_a_skipped_dependency_is_an_input_error() -> None:
    flow = Flow("f")
    flow.add_step("a", lambda run: 1, if_={"run": {"x": 1}})

    @flow.step
    def b(a: int) -> int:
        return a

    with pytest.raises(StepInputError, match="no key 'a'"):
        flow.run_eager({"x": 2})


def test_an_eager_app_reports_skipped_steps_in_its_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGFLOW_DATABASE_URL", raising=False)
    app = PgFlow(eager=True)
    flow = app.flow("eagercond")

    @flow.step(if_={"run": {"go": True}}, when_unmet="skip-cascade")
    def first(run: Any) -> int:
        return 1

    @flow.step
    def second(first: int) -> int:
        return first + 1

    @flow.step(if_not={"run": {"go": False}}, when_unmet="fail")
    def third(run: Any) -> int:
        return 3

    handle = flow.start({})
    assert handle.get() == {"third": 3}
    states = {s.step_slug: (s.status, s.skip_reason) for s in handle.wait().step_states}
    assert states == {
        "first": ("skipped", "condition_unmet"),
        "second": ("skipped", "dependency_skipped"),
        "third": ("completed", None),
    }
    # An unmet "fail" is decided before the skips of the same moment, as in the database.
    failed = flow.start({"go": False})
    assert {s.step_slug: s.status for s in failed.wait(raise_on_failure=False).step_states} == {
        "first": "created",
        "second": "created",
        "third": "failed",
    }
    with pytest.raises(RunFailed, match="Condition not met"):
        failed.wait()
