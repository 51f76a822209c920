"""Building flows with decorators and add_step: dependencies, map steps, options, and errors."""

from __future__ import annotations

from typing import Any

import pytest

from pgflow_kombu.errors import FlowDefinitionError
from pgflow_kombu.flows import Flow, StepContext


def test_decorators_infer_dependencies_from_parameter_names() -> None:
    flow = Flow("process_order", max_attempts=3)

    @flow.step
    def validate(run: dict[str, Any]) -> dict[str, Any]:
        return run

    @flow.step
    def charge(validate: dict[str, Any]) -> list[int]:
        return [1, 2]

    @flow.map(over="charge")
    def ship(item: int) -> int:
        return item

    @flow.step(depends_on=["ship", "validate"])
    def notify(ship: list[int], validate: dict[str, Any], run: dict[str, Any]) -> None:
        return None

    assert [s.slug for s in flow.steps] == ["validate", "charge", "ship", "notify"]
    assert [s.index for s in flow.steps] == [0, 1, 2, 3]
    assert flow.get_step("validate").deps == ()
    assert flow.get_step("charge").deps == ("validate",)
    assert flow.get_step("ship").deps == ("charge",)
    assert flow.get_step("ship").step_type == "map"
    assert flow.get_step("notify").deps == ("ship", "validate")
    assert flow.leaves == ("notify",)
    assert flow.dependents("validate") == ("charge", "notify")
    assert "ship" in flow and "nope" not in flow
    assert len(flow) == 4


def test_decorators_return_the_function_unchanged() -> None:
    flow = Flow("f")

    def original(run: int) -> int:
        return run + 1

    decorated = flow.step(original)
    assert decorated is original
    assert decorated(1) == 2


def test_parameters_naming_several_steps_make_several_dependencies() -> None:
    flow = Flow("f")

    @flow.step
    def a(run: int) -> int:
        return run

    @flow.step
    def b(run: int) -> int:
        return run

    @flow.step
    def c(b: int, a: int) -> int:
        return a + b

    assert flow.get_step("c").deps == ("b", "a")
    assert flow.leaves == ("c",)


def test_root_step_with_one_parameter_of_any_name_gets_the_run_input() -> None:
    flow = Flow("f")

    @flow.step
    def first(order: dict[str, Any]) -> Any:
        return order

    @flow.step
    def second(payload: dict[str, Any]) -> Any:  # a second root step
        return payload

    assert flow.get_step("first").is_root and flow.get_step("second").is_root
    assert flow.get_step("first").prepare({"run": {"x": 1}}).args == ({"x": 1},)


def test_step_slug_override_and_step_without_parameters() -> None:
    flow = Flow("f")

    @flow.step(slug="load")
    def load_everything() -> int:
        return 1

    @flow.step
    def after(load: int) -> int:
        return load

    assert [s.slug for s in flow.steps] == ["load", "after"]
    assert flow.get_step("after").deps == ("load",)


def test_root_maps() -> None:
    flow = Flow("f")

    @flow.map
    def each_item(x: int) -> int:
        return x

    @flow.map(over="run", slug="again")
    def other(x: int) -> int:
        return x

    assert flow.get_step("each_item").is_root and flow.get_step("each_item").is_map
    assert flow.get_step("again").deps == ()


def test_map_over_a_map() -> None:
    flow = Flow("f")

    @flow.map()
    def a(x: int) -> int:
        return x

    @flow.map(over="a")
    def b(x: int) -> int:
        return x

    assert flow.get_step("b").deps == ("a",)


def test_context_parameter_is_not_a_dependency() -> None:
    flow = Flow("f")

    @flow.step
    def a(run: int, ctx: StepContext) -> int:
        return run

    @flow.map(over="run")
    def m(x: int, context: StepContext) -> int:
        return x

    assert flow.get_step("a").deps == ()


# -- errors --------------------------------------------------------------------------------------


def test_unknown_dependency() -> None:
    flow = Flow("orders")
    with pytest.raises(FlowDefinitionError) as info:

        @flow.step(depends_on=["missing"])
        def a(missing: int) -> int:
            return missing

    assert str(info.value) == (
        "flow 'orders' step 'a': depends on unknown step 'missing' (steps defined so far: none); "
        "define it first"
    )
    assert info.value.flow_slug == "orders" and info.value.step_slug == "a"
    assert "a" not in flow


def test_map_over_unknown_step() -> None:
    flow = Flow("orders")
    with pytest.raises(FlowDefinitionError, match="step 'm': depends on unknown step 'charge'"):

        @flow.map(over="charge")
        def m(x: int) -> int:
            return x


def test_parameter_that_names_nothing() -> None:
    flow = Flow("orders")

    @flow.step
    def validate(run: int) -> int:
        return run

    with pytest.raises(FlowDefinitionError) as info:

        @flow.step
        def charge(validat: int) -> int:  # typo: would otherwise be a root step
            return validat

    assert str(info.value) == (
        "flow 'orders' step 'charge': parameter 'validat' names no step; did you mean "
        "'validate'? (The only parameter of a step without dependencies receives the flow "
        "input: name it 'run' to say so.)"
    )
    flow2 = Flow("orders2")

    @flow2.step
    def validate2(run: int) -> int:
        return run

    with pytest.raises(FlowDefinitionError) as info2:

        @flow2.step
        def charge2(validate2: int, amount: int) -> int:
            return amount

    assert str(info2.value) == (
        "flow 'orders2' step 'charge2': parameter 'amount' names no step (steps defined so far: "
        "'validate2') and is not 'run'; define the step it names first, or name it 'run' for "
        "the flow input"
    )


def test_parameter_with_default_that_names_nothing_keeps_its_default() -> None:
    flow = Flow("f")

    @flow.step
    def a(run: int, scale: int = 2) -> int:
        return run * scale

    call = flow.get_step("a").prepare({"run": 3})
    assert call.args == (3,) and call.kwargs == {}
    assert call() == 6


def test_parameter_naming_a_step_missing_from_depends_on() -> None:
    flow = Flow("f")

    @flow.step
    def a(run: int) -> int:
        return run

    @flow.step
    def b(run: int) -> int:
        return run

    with pytest.raises(FlowDefinitionError, match="parameter 'a' names step 'a', which is not in"):

        @flow.step(depends_on=["b"])
        def c(a: int, b: int) -> int:
            return a + b


def test_explicit_single_dependency_feeds_a_differently_named_parameter() -> None:
    flow = Flow("f")

    @flow.step
    def a(run: int) -> int:
        return run

    @flow.step(depends_on=["a"])
    def b(value: int) -> int:
        return value

    assert flow.get_step("b").prepare({"run": 0, "a": 5}).args == (5,)


def test_explicit_dependencies_with_unbound_parameter() -> None:
    flow = Flow("f")
    flow.add_step("a")
    flow.add_step("b")
    with pytest.raises(FlowDefinitionError, match="parameter 'value' names no step"):

        @flow.step(depends_on=["a", "b"])
        def c(value: int) -> int:
            return value


def test_duplicate_step() -> None:
    flow = Flow("f")

    @flow.step
    def a(run: int) -> int:
        return run

    with pytest.raises(FlowDefinitionError, match="step 'a': a step with this slug is already"):
        flow.add_step("a")


@pytest.mark.parametrize("slug", ["run", "bad-slug", "", "9lives"])
def test_invalid_step_slug(slug: str) -> None:
    flow = Flow("f")
    with pytest.raises(FlowDefinitionError, match=r"invalid step slug .* in flow 'f'"):
        flow.add_step(slug)


def test_function_named_run_cannot_be_a_step_without_a_slug() -> None:
    flow = Flow("f")
    with pytest.raises(FlowDefinitionError, match=r"'run'.*reserved"):

        @flow.step
        def run() -> None:
            return None


def test_invalid_flow_slug() -> None:
    with pytest.raises(FlowDefinitionError, match="invalid flow slug 'my-flow'"):
        Flow("my-flow")
    with pytest.raises(FlowDefinitionError, match="at most 47"):
        Flow("x" * 48)


def test_map_step_with_several_dependencies() -> None:
    flow = Flow("f")
    flow.add_step("a")
    flow.add_step("b")
    with pytest.raises(
        FlowDefinitionError,
        match=r"step 'm': a map step can have at most one dependency .*got 2: a, b",
    ):
        flow.add_step("m", depends_on=["a", "b"], step_type="map")


def test_self_duplicate_and_run_dependencies() -> None:
    flow = Flow("f")
    flow.add_step("a")
    with pytest.raises(FlowDefinitionError, match="cannot depend on itself"):
        flow.add_step("b", depends_on=["b"])
    with pytest.raises(FlowDefinitionError, match="dependency 'a' is listed twice"):
        flow.add_step("b", depends_on=["a", "a"])
    with pytest.raises(FlowDefinitionError, match="'run' is the flow input, not a step"):
        flow.add_step("b", depends_on=["run"])
    with pytest.raises(FlowDefinitionError, match="depends_on must be a list"):
        flow.add_step("b", depends_on="a")
    with pytest.raises(FlowDefinitionError, match="step_type must be 'single' or 'map'"):
        flow.add_step("b", step_type="fanout")  # type: ignore[arg-type]


def test_map_handler_signature() -> None:
    flow = Flow("f")
    with pytest.raises(FlowDefinitionError, match="first positional parameter"):

        @flow.map
        def no_params() -> int:
            return 1

    with pytest.raises(FlowDefinitionError, match="parameter 'extra' needs a default"):

        @flow.map
        def two_params(item: int, extra: int) -> int:
            return item

    @flow.map
    def with_default(item: int, extra: int = 1) -> int:
        return item + extra

    assert flow.get_step("with_default").is_map


def test_not_callable_handler() -> None:
    flow = Flow("f")
    with pytest.raises(FlowDefinitionError, match="is not callable"):
        flow.add_step("a", 42)  # type: ignore[arg-type]


def test_unresolvable_type_hint_is_reported_when_the_step_runs() -> None:
    flow = Flow("f")

    @flow.step
    def a(run: NotDefinedYet) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 1

    with pytest.raises(FlowDefinitionError, match="step 'a': cannot resolve the type hints"):
        flow.get_step("a").prepare({"run": 1})


def test_unsupported_type_hint_is_reported_at_definition() -> None:
    flow = Flow("f")

    class Opaque:
        pass

    def a(run: Any) -> Any:
        return run

    a.__annotations__["run"] = Opaque
    with pytest.raises(FlowDefinitionError, match="parameter 'run' cannot be validated"):
        flow.add_step("a", a)


# -- options -------------------------------------------------------------------------------------


def test_options_are_kept_only_where_set() -> None:
    flow = Flow("f", timeout=30)
    flow.add_step("a", max_attempts=5, start_delay=0)
    flow.add_step("b")
    assert flow.options.as_dict() == {"timeout": 30}
    assert flow.get_step("a").options.as_dict() == {"max_attempts": 5, "start_delay": 0}
    assert flow.get_step("b").options.as_dict() == {}
    assert flow.get_step("a").options.resolve(flow.options) == {
        "max_attempts": 5,
        "base_delay": 5,
        "timeout": 30,
        "start_delay": 0,
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": -1}, "max_attempts must be a non-negative integer, got -1"),
        ({"base_delay": -5}, "base_delay must be a non-negative integer (seconds), got -5"),
        ({"timeout": 0}, "timeout must be a positive integer (seconds), got 0"),
        ({"timeout": 1.5}, "timeout must be a positive integer (seconds), got 1.5"),
        ({"max_attempts": True}, "max_attempts must be a non-negative integer, got True"),
        ({"max_attempts": "3"}, "max_attempts must be a non-negative integer, got '3'"),
    ],
)
def test_flow_options_out_of_range(options: dict[str, Any], message: str) -> None:
    with pytest.raises(FlowDefinitionError) as info:
        Flow("f", **options)
    assert str(info.value) == f"flow 'f': {message}"
    assert info.value.flow_slug == "f"


def test_step_options_out_of_range() -> None:
    flow = Flow("f")
    with pytest.raises(FlowDefinitionError) as info:

        @flow.step(start_delay=-1)
        def a() -> None:
            return None

    assert str(info.value) == (
        "flow 'f' step 'a': start_delay must be a non-negative integer (seconds), got -1"
    )
    assert info.value.step_slug == "a"
    # zero attempts and zero delays are what the schema allows
    flow.add_step("b", max_attempts=0, base_delay=0, start_delay=0, timeout=1)
