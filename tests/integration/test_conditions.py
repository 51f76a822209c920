"""Conditional steps: the same scenarios in an eager run and through a worker, same outcomes.

Each scenario is a flow, a run input and the expected outcome: run status, run output, which
steps were skipped (and why) and which step failed. ``mode`` runs it in this process
(``eager_result``, no database) or on a real database through an in-process worker; both must
give the expected outcome, so they agree with each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pgflow_kombu.client import Client
from pgflow_kombu.flows import Flow
from pgflow_kombu.flows.conditions import WhenExhausted
from pgflow_kombu.flows.eager import eager_result
from pgflow_kombu.worker import PgmqSource, Worker
from tests.support.databases import clone_database, drop

# -- flows ---------------------------------------------------------------------------------------

# a runs only for kind "a" (plain skip); c gets a's key only when a ran; lone is a skipped leaf
# for kind "b".
branch = Flow("cond_branch", base_delay=0)


@branch.step(if_={"run": {"kind": "a"}})
def a(run: dict[str, Any]) -> str:
    return "A"


@branch.step
def b(run: dict[str, Any]) -> str:
    return "B"


@branch.step
def c(b: str, a: str | None = None) -> dict[str, Any]:
    return {"a": a, "b": b}


@branch.step(if_not={"run": {"kind": "b"}})
def lone(run: dict[str, Any]) -> str:
    return "lone"


# gate and everything after it are skipped unless go is true.
cascade = Flow("cond_cascade", base_delay=0)


@cascade.step(if_={"run": {"go": True}}, when_unmet="skip-cascade")
def gate(run: dict[str, Any]) -> int:
    return 1


@cascade.step
def after(gate: int) -> int:
    return gate + 1


@cascade.step
def last(after: int) -> int:
    return after + 1


@cascade.step
def other(run: dict[str, Any]) -> str:
    return "other"


# check fails the run when ok is not true.
strict = Flow("cond_strict", base_delay=0)


@strict.step(if_={"run": {"ok": True}}, when_unmet="fail")
def check(run: dict[str, Any]) -> str:
    return "checked"


@strict.step
def follow(check: str) -> str:
    return check + "!"


# Conditions on a dependency's output: high / low branch on score.
scores = Flow("cond_scores", base_delay=0)


@scores.step
def score(run: dict[str, Any]) -> dict[str, Any]:
    return {"level": run["level"]}


@scores.step(if_={"score": {"level": "high"}})
def high(score: dict[str, Any]) -> str:
    return "H"


@scores.step(if_not={"score": {"level": "high"}})
def low(score: dict[str, Any]) -> str:
    return "L"


# when_exhausted: flaky's last failure skips it (plain or cascade) or fails the run.
def _flaky(run: dict[str, Any]) -> str:
    if run.get("boom"):
        raise RuntimeError("boom")
    return "fine"


def _then(run: dict[str, Any], flaky: str | None = None) -> str:
    return flaky or "fallback"


def exhausted_flow(slug: str, when_exhausted: WhenExhausted) -> Flow:
    flow = Flow(slug, max_attempts=1, base_delay=0)
    flow.add_step("flaky", _flaky, when_exhausted=when_exhausted)
    flow.add_step("then", _then)
    return flow


ex_skip = exhausted_flow("cond_ex_skip", "skip")
ex_cascade = exhausted_flow("cond_ex_cascade", "skip-cascade")
ex_fail = exhausted_flow("cond_ex_fail", "fail")

# Map steps: items is skipped unless map is true, each over a skipped step has no task; count
# runs only when its element list contains 2.
mapped = Flow("cond_map", base_delay=0)


@mapped.step(if_={"run": {"map": True}})
def items(run: dict[str, Any]) -> list[int]:
    return list(run["items"])


@mapped.map(over="items")
def each(x: int) -> int:
    return x * 10


@mapped.step
def total(each: list[int]) -> int:
    return sum(each)


@mapped.step(if_={"items": [2]})
def has_two(items: list[int]) -> bool:
    return True


# A map task that fails for good skips the map step; its dependent gets no key.
map_exhausted = Flow("cond_map_ex", max_attempts=1, base_delay=0)


@map_exhausted.map(when_exhausted="skip")
def part(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return x


@map_exhausted.step
def summary(run: list[int], part: list[int] | None = None) -> Any:
    return part if part is not None else "no parts"


# Every leaf skipped: the run completes with output None.
nothing = Flow("cond_nothing", base_delay=0)


@nothing.step(if_={"run": {"x": 1}})
def only(run: dict[str, Any]) -> str:
    return "only"


# An unmet "fail" wins over skips decided at the same moment: nothing is skipped.
precedence = Flow("cond_precedence", base_delay=0)


@precedence.step(if_={"run": {"go": True}}, when_unmet="skip-cascade")
def first(run: Any) -> int:
    return 1


@precedence.step(if_not={"run": {"go": False}}, when_unmet="fail")
def third(run: Any) -> int:
    return 3


FLOWS = [branch, cascade, strict, scores, ex_skip, ex_cascade, ex_fail, mapped, map_exhausted]
FLOWS += [nothing, precedence]


@dataclass(frozen=True)
class Outcome:
    status: str
    output: Any = None
    skipped: dict[str, str] = field(default_factory=dict)  # step -> skip reason
    failed: str | None = None


@dataclass(frozen=True)
class Scenario:
    flow: Flow
    input: Any
    expected: Outcome

    def __str__(self) -> str:
        return f"{self.flow.slug}:{self.input}"


SCENARIOS = [
    Scenario(
        branch, {"kind": "a"}, Outcome("completed", {"c": {"a": "A", "b": "B"}, "lone": "lone"})
    ),
    Scenario(
        branch,
        {"kind": "b"},
        Outcome(
            "completed",
            {"c": {"a": None, "b": "B"}},
            {"a": "condition_unmet", "lone": "condition_unmet"},
        ),
    ),
    Scenario(cascade, {"go": True}, Outcome("completed", {"last": 3, "other": "other"})),
    Scenario(
        cascade,
        {"go": False},
        Outcome(
            "completed",
            {"other": "other"},
            {
                "gate": "condition_unmet",
                "after": "dependency_skipped",
                "last": "dependency_skipped",
            },
        ),
    ),
    Scenario(strict, {"ok": True}, Outcome("completed", {"follow": "checked!"})),
    Scenario(strict, {"ok": False}, Outcome("failed", failed="check")),
    Scenario(
        scores, {"level": "high"}, Outcome("completed", {"high": "H"}, {"low": "condition_unmet"})
    ),
    Scenario(
        scores, {"level": "mid"}, Outcome("completed", {"low": "L"}, {"high": "condition_unmet"})
    ),
    Scenario(ex_skip, {"boom": False}, Outcome("completed", {"then": "fine"})),
    Scenario(
        ex_skip,
        {"boom": True},
        Outcome("completed", {"then": "fallback"}, {"flaky": "handler_failed"}),
    ),
    Scenario(
        ex_cascade,
        {"boom": True},
        Outcome("completed", None, {"flaky": "handler_failed", "then": "dependency_skipped"}),
    ),
    Scenario(ex_fail, {"boom": True}, Outcome("failed", failed="flaky")),
    Scenario(
        mapped,
        {"map": True, "items": [1, 2, 3]},
        Outcome("completed", {"total": 60, "has_two": True}),
    ),
    Scenario(
        mapped,
        {"map": True, "items": [1, 3]},
        Outcome("completed", {"total": 40}, {"has_two": "condition_unmet"}),
    ),
    Scenario(
        mapped,
        {"map": False, "items": []},
        Outcome(
            "completed", {"total": 0}, {"items": "condition_unmet", "has_two": "condition_unmet"}
        ),
    ),
    Scenario(map_exhausted, [1, 2], Outcome("completed", {"summary": [1, 2]})),
    Scenario(
        map_exhausted,
        [1, -2, 3],
        Outcome("completed", {"summary": "no parts"}, {"part": "handler_failed"}),
    ),
    Scenario(nothing, {"x": 2}, Outcome("completed", None, {"only": "condition_unmet"})),
    Scenario(nothing, {"x": 1}, Outcome("completed", {"only": "only"})),
    Scenario(precedence, {"go": False}, Outcome("failed", failed="third")),
    Scenario(precedence, {}, Outcome("completed", {"third": 3}, {"first": "condition_unmet"})),
]


# -- running a scenario ----------------------------------------------------------------------------


def run_eagerly(scenario: Scenario) -> Outcome:
    result = eager_result(scenario.flow, scenario.input)
    failed = [slug for slug, status in result.statuses.items() if status == "failed"]
    return Outcome(
        "failed" if result.error is not None else "completed",
        result.output,
        dict(result.skip_reasons),
        failed[0] if failed else None,
    )


@pytest.fixture(scope="module")
def served(pg_admin_url: str, schema_template: str) -> Iterator[tuple[Client, str]]:
    """One database and one worker serving every flow of this module."""
    url = clone_database(pg_admin_url, schema_template, prefix="c")
    worker = Worker(
        {f.slug: f for f in FLOWS},
        url,
        source=PgmqSource(url, poll_interval=0.05),
        heartbeat_interval=0.5,
        concurrency=4,
    )
    worker.start()
    client = Client(url, poll_interval=0.1)
    try:
        yield client, url
    finally:
        worker.stop(5)
        client.close()
        drop(pg_admin_url, url)


def run_on_worker(client: Client, scenario: Scenario) -> Outcome:
    run_id = client.start_flow(scenario.flow.slug, scenario.input)
    run = client.wait(run_id, timeout=30, raise_on_failure=False)
    skipped = {s.step_slug: s.skip_reason for s in run.step_states if s.status == "skipped"}
    failed = [s.step_slug for s in run.step_states if s.status == "failed"]
    return Outcome(
        run.status,
        run.output,
        {k: v for k, v in skipped.items() if v is not None},
        failed[0] if failed else None,
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
@pytest.mark.parametrize("mode", ["eager", "worker"])
def test_conditional_flows_have_the_same_outcome_eagerly_and_on_a_worker(
    mode: str, scenario: Scenario, request: pytest.FixtureRequest
) -> None:
    if mode == "eager":
        outcome = run_eagerly(scenario)
    else:
        client, _url = request.getfixturevalue("served")
        outcome = run_on_worker(client, scenario)
    assert outcome == scenario.expected


def test_a_condition_that_fails_says_so_on_the_step_and_stops_the_run(
    served: tuple[Client, str],
) -> None:
    client, _url = served
    run = client.wait(client.start_flow("cond_strict", {"ok": False}), raise_on_failure=False)
    states = {s.step_slug: s for s in run.step_states}
    assert run.status == "failed"
    assert states["check"].error_message == "Condition not met"
    assert states["follow"].status == "created"
    assert states["check"].tasks == () and states["follow"].tasks == ()


def test_an_exhausted_step_that_is_skipped_keeps_its_error_and_failed_task(
    served: tuple[Client, str],
) -> None:
    client, _url = served
    run = client.wait(client.start_flow("cond_ex_skip", {"boom": True}))
    flaky = next(s for s in run.step_states if s.step_slug == "flaky")
    assert (flaky.status, flaky.skip_reason) == ("skipped", "handler_failed")
    assert flaky.error_message == "RuntimeError: boom"
    assert [(t.status, t.attempts_count) for t in flaky.tasks] == [("failed", 1)]
