"""Chaining tasks into flows: chain(), >>, fan-out/fan-in, map members, duplicate tasks."""

from __future__ import annotations

from typing import Any

import pytest

from pgflow_kombu.errors import FlowDefinitionError
from pgflow_kombu.flows import Chain, Flow, StepContext, chain, each, task


@task(max_attempts=5)
def extract(n: int) -> list[int]:
    return list(range(n))


@task(timeout=7)
def double(x: int) -> int:
    return 2 * x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@task
def count(xs: list[int]) -> int:
    return len(xs)


@task
def describe(parts: list[Any]) -> str:
    return repr(parts)


@task
def add(x: int, y: int = 0, *, z: int = 0) -> int:
    return x + y + z


def shape_steps(flow: Flow) -> list[tuple[str, list[str], str]]:
    return [(s["slug"], s["deps"], s["step_type"]) for s in flow.shape()["steps"]]


def test_chain_feeds_each_step_its_predecessor_output() -> None:
    etl = chain("etl", extract, total, double)
    assert shape_steps(etl) == [
        ("extract", [], "single"),
        ("total", ["extract"], "single"),
        ("double", ["total"], "single"),
    ]
    assert etl.run_eager({"n": 4}) == {"double": 12}


def test_operator_form_is_the_same_flow() -> None:
    pipeline = extract >> total >> double
    assert isinstance(pipeline, Chain)
    assert pipeline.to_flow("etl").shape() == chain("etl", extract, total, double).shape()


def test_task_options_become_step_options_and_chain_options_the_flows() -> None:
    flow = chain("etl", extract, total, double, max_attempts=2, timeout=100)
    shape = flow.shape()
    assert shape["options"] == {"max_attempts": 2, "timeout": 100}
    assert [s["options"] for s in shape["steps"]] == [{"max_attempts": 5}, {}, {"timeout": 7}]


def test_fan_out_then_fan_in_gets_the_list_of_branch_outputs_in_order() -> None:
    flow = (extract >> [total, count] >> describe).to_flow("stats")
    assert shape_steps(flow) == [
        ("extract", [], "single"),
        ("total", ["extract"], "single"),
        ("count", ["extract"], "single"),
        ("describe", ["total", "count"], "single"),
    ]
    assert flow.run_eager({"n": 4}) == {"describe": "[6, 4]"}
    # a worker receives pgflow's object input and the adapter orders it like the branches
    step = flow.get_step("describe")
    assert step.execute({"run": {"n": 4}, "count": 4, "total": 6}) == "[6, 4]"


def test_map_member_runs_once_per_element() -> None:
    flow = (extract >> double.map() >> total).to_flow("sum_doubles")
    assert shape_steps(flow) == [
        ("extract", [], "single"),
        ("double", ["extract"], "map"),
        ("total", ["double"], "single"),
    ]
    assert flow.run_eager({"n": 4}) == {"total": 12}
    assert flow.run_eager({"n": 0}) == {"total": 0}
    assert (extract >> each(double) >> total).to_flow("sum_doubles").shape() == flow.shape()


def test_chain_starting_with_a_map_maps_over_the_run_input() -> None:
    flow = chain("doubles", each(double), total)
    assert shape_steps(flow) == [("double", [], "map"), ("total", ["double"], "single")]
    assert flow.run_eager([1, 2, 3]) == {"total": 12}


def test_same_task_twice_gets_numbered_slugs() -> None:
    flow = chain("quad", extract, total, double, double, double.s().set(slug="last"))
    assert [s.slug for s in flow.steps] == ["extract", "total", "double", "double_2", "last"]
    assert flow.run_eager({"n": 3}) == {"last": 24}


def test_explicit_duplicate_slug_is_an_error() -> None:
    with pytest.raises(FlowDefinitionError, match="step 'total': a step with this slug is already"):
        chain("dup", extract, total, count.s().set(slug="total"))


def test_partial_arguments_follow_the_piped_value() -> None:
    flow = chain("adds", extract >> total, add.s(10, z=100))
    assert flow.run_eager({"n": 3}) == {"add": 113}


def test_head_gets_the_run_input_as_keyword_arguments() -> None:
    flow = chain("h", add, double)
    assert flow.run_eager({"x": 1, "y": 2}) == {"double": 6}


def test_delay_on_a_chain_flow_binds_the_head_task_signature() -> None:
    flow = chain("h", add, double)
    assert flow.build_input(1, y=2) == {"x": 1, "y": 2}


def test_nested_fan_out_gives_nested_lists() -> None:
    flow = (extract >> [total >> [double, add.s(1)], count] >> describe).to_flow("nested")
    assert shape_steps(flow)[-1] == ("describe", ["double", "add", "count"], "single")
    assert flow.run_eager({"n": 3}) == {"describe": "[[6, 4], 3]"}


def test_root_fan_out() -> None:
    flow = ([add, add.s().set(slug="add_again")] >> describe).to_flow("roots")
    assert shape_steps(flow) == [
        ("add", [], "single"),
        ("add_again", [], "single"),
        ("describe", ["add", "add_again"], "single"),
    ]
    assert flow.run_eager({"x": 1, "z": 2}) == {"describe": "[3, 3]"}


def test_map_after_fan_out_is_an_error() -> None:
    with pytest.raises(FlowDefinitionError, match="step 'double': a map step needs one array"):
        (extract >> [total, count] >> double.map()).to_flow("bad")


def test_task_that_cannot_take_the_piped_value_is_an_error() -> None:
    @task
    def no_args() -> int:
        return 1

    with pytest.raises(FlowDefinitionError) as info:
        chain("bad", extract, no_args)
    assert str(info.value).startswith(
        "flow 'bad' step 'no_args': no_args() cannot take the previous step's output: "
    )

    @task
    def two_required(a: int, b: int) -> int:
        return a + b

    with pytest.raises(FlowDefinitionError, match="missing a required argument: 'b'"):
        chain("bad2", extract, two_required)
    assert chain("ok", extract >> total, two_required.s(1)).run_eager({"n": 2}) == {
        "two_required": 2
    }


def test_context_parameter_in_chained_task() -> None:
    @task
    def indexed(x: int, ctx: StepContext) -> str:
        return f"{ctx.step_slug}:{ctx.task_index}:{x}"

    flow = (extract >> indexed.map()).to_flow("ctx")
    assert flow.run_eager({"n": 2}) == {"indexed": ["indexed:0:0", "indexed:1:1"]}


def test_bad_chain_items() -> None:
    with pytest.raises(FlowDefinitionError, match="cannot chain 42"):
        chain("bad", extract, 42)  # type: ignore[arg-type]
    with pytest.raises(FlowDefinitionError, match="a fan-out needs at least one branch"):
        chain("bad", extract, [])
    with pytest.raises(FlowDefinitionError, match="needs at least one task"):
        chain("bad")
    with pytest.raises(FlowDefinitionError, match="invalid flow slug"):
        chain("bad-slug", extract)


def test_chain_of_chains_concatenates() -> None:
    first = extract >> total
    second = double >> double
    assert shape_steps((first >> second).to_flow("cc")) == [
        ("extract", [], "single"),
        ("total", ["extract"], "single"),
        ("double", ["total"], "single"),
        ("double_2", ["double"], "single"),
    ]
