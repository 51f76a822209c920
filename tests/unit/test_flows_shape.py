"""Shapes: what create_flow/add_step receive, comparing with the database, flows from data."""

from __future__ import annotations

from typing import Any

import pytest

from pgflow_kombu.errors import FlowDefinitionError
from pgflow_kombu.flows import (
    Flow,
    FlowShape,
    add_step_arguments,
    compare_shapes,
    create_flow_arguments,
    define_flow,
)


def order_flow() -> Flow:
    flow = Flow("process_order", max_attempts=3)

    @flow.step
    def validate(run: Any) -> Any:
        return run

    @flow.step(timeout=10)
    def charge(validate: Any) -> list[int]:
        return [1]

    @flow.map(over="charge", max_attempts=5, start_delay=2)
    def ship(item: int) -> int:
        return item

    @flow.step(depends_on=["ship", "validate"])
    def notify(ship: list[int], validate: Any) -> None:
        return None

    return flow


EXPECTED: FlowShape = {
    "flow_slug": "process_order",
    "options": {"max_attempts": 3},
    "steps": [
        {"slug": "validate", "deps": [], "step_type": "single", "options": {}},
        {"slug": "charge", "deps": ["validate"], "step_type": "single", "options": {"timeout": 10}},
        {
            "slug": "ship",
            "deps": ["charge"],
            "step_type": "map",
            "options": {"max_attempts": 5, "start_delay": 2},
        },
        {"slug": "notify", "deps": ["ship", "validate"], "step_type": "single", "options": {}},
    ],
}


def test_shape_is_plain_data_in_definition_order() -> None:
    assert order_flow().shape() == EXPECTED


def test_compile_arguments_pass_only_set_options() -> None:
    shape = order_flow().shape()
    assert create_flow_arguments(shape) == {"flow_slug": "process_order", "max_attempts": 3}
    assert add_step_arguments(shape) == [
        {"flow_slug": "process_order", "step_slug": "validate", "deps_slugs": [],
         "step_type": "single"},
        {"flow_slug": "process_order", "step_slug": "charge", "deps_slugs": ["validate"],
         "timeout": 10, "step_type": "single"},
        {"flow_slug": "process_order", "step_slug": "ship", "deps_slugs": ["charge"],
         "max_attempts": 5, "start_delay": 2, "step_type": "map"},
        {"flow_slug": "process_order", "step_slug": "notify", "deps_slugs": ["ship", "validate"],
         "step_type": "single"},
    ]  # fmt: skip


def db_shape() -> FlowShape:
    """The shape as read back from pgflow.flows/steps/deps: every flow option, deps sorted."""
    return {
        "flow_slug": "process_order",
        "options": {"max_attempts": 3, "base_delay": 5, "timeout": 60},
        "steps": [
            {"slug": "validate", "deps": [], "step_type": "single", "options": {}},
            {"slug": "charge", "deps": ["validate"], "step_type": "single",
             "options": {"timeout": 10}},
            {"slug": "ship", "deps": ["charge"], "step_type": "map",
             "options": {"max_attempts": 5, "start_delay": 2}},
            {"slug": "notify", "deps": ["ship", "validate"][::-1], "step_type": "single",
             "options": {}},
        ],
    }  # fmt: skip


def test_same_flow_read_back_from_database_has_no_differences() -> None:
    assert compare_shapes(order_flow().shape(), db_shape()) == []


def test_structural_differences_use_pgflow_wording() -> None:
    stored = db_shape()
    stored["steps"][1]["slug"] = "pay"
    stored["steps"][2]["step_type"] = "single"
    stored["steps"][3]["deps"] = ["validate"]
    stored["steps"].append({"slug": "extra", "deps": [], "step_type": "single", "options": {}})
    diffs = compare_shapes(order_flow().shape(), stored)
    assert [str(d) for d in diffs] == [
        "Step count differs: 4 vs 5",
        "Step at index 1: slug differs 'charge' vs 'pay'",
        "Step at index 2: type differs 'map' vs 'single'",
        "Step at index 3: dependencies differ [ship, validate] vs [validate]",
        "Step at index 4: missing in first shape (second has 'extra')",
    ]
    assert {d.kind for d in diffs} == {"structure"}


def test_missing_step_in_second_shape() -> None:
    stored = db_shape()
    del stored["steps"][3]
    assert [str(d) for d in compare_shapes(order_flow().shape(), stored)] == [
        "Step count differs: 4 vs 3",
        "Step at index 3: missing in second shape (first has 'notify')",
    ]


def test_option_differences_are_their_own_kind() -> None:
    stored = db_shape()
    stored["options"]["timeout"] = 30
    stored["steps"][1]["options"] = {}
    stored["steps"][0]["options"] = {"base_delay": 2}
    diffs = compare_shapes(order_flow().shape(), stored)
    assert [(d.kind, d.message) for d in diffs] == [
        ("options", "Flow option timeout differs: 60 vs 30"),
        ("options", "Step at index 0 ('validate'): option base_delay differs: unset vs 2"),
        ("options", "Step at index 1 ('charge'): option timeout differs: 10 vs unset"),
    ]


def test_unset_flow_options_compare_as_create_flow_defaults() -> None:
    code = Flow("f").shape()
    stored: FlowShape = {
        "flow_slug": "f",
        "options": {"max_attempts": 3, "base_delay": 5, "timeout": 60},
        "steps": [],
    }
    assert compare_shapes(code, stored) == []
    stored["options"]["base_delay"] = 1
    assert [str(d) for d in compare_shapes(code, stored)] == [
        "Flow option base_delay differs: 5 vs 1"
    ]


def test_flow_slug_difference() -> None:
    assert [str(d) for d in compare_shapes(Flow("a").shape(), Flow("b").shape())] == [
        "Flow slug differs 'a' vs 'b'"
    ]


# -- flows from data -----------------------------------------------------------------------------


def test_define_flow_from_upsert_data() -> None:
    flow = define_flow(
        "acct_123_hubspot_sync_v1",
        max_attempts=3,
        steps=[
            {"slug": "reshape", "deps": []},
            {"slug": "create_contact", "deps": ["reshape"], "timeout": 30},
            {"slug": "each", "deps": ["create_contact"], "step_type": "map"},
        ],
    )
    assert flow.shape() == {
        "flow_slug": "acct_123_hubspot_sync_v1",
        "options": {"max_attempts": 3},
        "steps": [
            {"slug": "reshape", "deps": [], "step_type": "single", "options": {}},
            {"slug": "create_contact", "deps": ["reshape"], "step_type": "single",
             "options": {"timeout": 30}},
            {"slug": "each", "deps": ["create_contact"], "step_type": "map", "options": {}},
        ],
    }  # fmt: skip


def test_shape_round_trips_through_from_shape() -> None:
    shape = order_flow().shape()
    assert Flow.from_shape(shape).shape() == shape
    assert compare_shapes(shape, Flow.from_shape(db_shape()).shape()) == []


def test_data_defined_step_without_handler_cannot_run() -> None:
    flow = define_flow("f", steps=[{"slug": "a"}])
    with pytest.raises(FlowDefinitionError, match="step 'a' has no handler"):
        flow.get_step("a").execute({"run": 1})


def test_data_defined_flow_with_handlers() -> None:
    def reshape(run: dict[str, Any]) -> dict[str, Any]:
        return {"name": run["n"].upper()}

    def create_contact(reshape: dict[str, Any]) -> str:
        return f"contact:{reshape['name']}"

    flow = define_flow(
        "f",
        steps=[{"slug": "reshape"}, {"slug": "create_contact", "deps": ["reshape"]}],
        handlers={"reshape": reshape, "create_contact": create_contact},
    )
    assert flow.run_eager({"n": "ada"}) == {"create_contact": "contact:ADA"}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"slug": "a", "deps": ["b"]}], "step 'a': depends on unknown step 'b'"),
        (
            [{"slug": "a", "deps": ["b"]}, {"slug": "b", "deps": []}],
            "step 'a': depends on step 'b', which is defined later; list it first",
        ),
        (
            [{"slug": "a", "deps": ["b"]}, {"slug": "b", "deps": ["a"]}],
            "step 'a': dependency cycle: a -> b -> a",
        ),
        ([{"slug": "a"}, {"slug": "a"}], "step 'a': a step with this slug is already defined"),
        ([{"deps": []}], "step #0 has no 'slug'"),
        ([{"slug": "a", "dependencies": []}], "step 'a': unknown keys ['dependencies']"),
        ([{"slug": "bad-slug"}], "invalid step slug 'bad-slug'"),
        (
            [{"slug": "a"}, {"slug": "b"}, {"slug": "m", "deps": ["a", "b"], "step_type": "map"}],
            "a map step can have at most one dependency",
        ),
        ([{"slug": "a", "timeout": 0}], "step 'a': timeout must be a positive integer"),
        ([{"slug": "a", "step_type": "loop"}], "step_type must be 'single' or 'map'"),
        (["a"], "step #0 must be a mapping"),
        ([{"slug": "a", "options": {"retries": 1}}], "step 'a': unknown options ['retries']"),
    ],
)
def test_define_flow_validation(steps: list[Any], message: str) -> None:
    with pytest.raises(FlowDefinitionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        define_flow("f", steps=steps)


def test_define_flow_rejects_handlers_for_unknown_steps() -> None:
    with pytest.raises(FlowDefinitionError, match=r"handlers given for unknown steps: \['b'\]"):
        define_flow("f", steps=[{"slug": "a"}], handlers={"b": lambda: None})


def test_define_flow_validates_flow_options_and_slug() -> None:
    with pytest.raises(FlowDefinitionError, match="flow 'f': max_attempts must be"):
        define_flow("f", steps=[], max_attempts=-1)
    with pytest.raises(FlowDefinitionError, match="invalid flow slug"):
        define_flow("f-1", steps=[])


def test_from_shape_rejects_unknown_flow_options() -> None:
    with pytest.raises(FlowDefinitionError, match=r"flow 'f': unknown options \['retries'\]"):
        Flow.from_shape({"flow_slug": "f", "options": {"retries": 1}, "steps": []})


def test_resolved_options_fall_back_to_flow_then_defaults() -> None:
    flow = order_flow()
    assert flow.resolved_options("charge") == {
        "max_attempts": 3,
        "base_delay": 5,
        "timeout": 10,
        "start_delay": 0,
    }
    assert flow.resolved_options("ship")["max_attempts"] == 5
    assert flow.resolved_options("ship")["start_delay"] == 2
