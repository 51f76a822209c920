"""Worker options, app loading and log formats, without a database."""

from __future__ import annotations

import json
import logging
import sys
import types
from collections.abc import Iterator

import pytest

from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.flows import Flow, task
from pgflow_kombu.settings import WorkerSettings
from pgflow_kombu.worker import Worker
from pgflow_kombu.worker.loading import flows_of, load_flows
from pgflow_kombu.worker.logs import JsonFormatter, TextFormatter
from pgflow_kombu.worker.options import select_flows

URL = "postgresql://nobody@127.0.0.1:1/none"

one = Flow("one")


@one.step
def first(run: int) -> int:
    return run


@task
def solo(x: int) -> int:
    return x


def test_prefetch_defaults_to_twice_the_concurrency() -> None:
    assert WorkerSettings(concurrency=3).claim_ahead == 6
    assert WorkerSettings(concurrency=3, prefetch=1).claim_ahead == 1


def test_queues_select_flows_and_unknown_ones_are_named() -> None:
    flows = {"one": one, "solo": solo.flow}
    assert list(select_flows(flows, ["solo"])) == ["solo"]
    with pytest.raises(ConfigurationError, match="no code for flow\\(s\\) nope"):
        select_flows(flows, ["solo", "nope"])
    with pytest.raises(ConfigurationError, match="at least one flow"):
        select_flows({}, None)


def test_worker_checks_its_options_before_touching_the_database() -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        Worker({"one": one}, URL, concurrency=0)
    worker = Worker({"one": one, "solo": solo.flow}, URL, queues=["one"], concurrency=2)
    assert (list(worker.flows), worker.prefetch) == (["one"], 4)
    assert set(worker.worker_ids) == {"one"}


def test_a_committed_report_batch_wakes_a_loop_held_back_by_the_report_backlog() -> None:
    # The loop stops claiming while too many outcomes wait to be reported; it must resume as
    # soon as a batch commits, not after its idle wait runs out.
    worker = Worker({"one": one}, URL)
    worker._wakeup.clear()
    worker._on_reported([])
    assert worker._wakeup.is_set()


class FakeApp:
    def __init__(self) -> None:
        self.flows = {"one": one}


@pytest.fixture
def app_module() -> Iterator[str]:
    module = types.ModuleType("fake_worker_app")
    module.app = FakeApp()  # type: ignore[attr-defined]
    module.solo = solo  # type: ignore[attr-defined]
    module.other = one  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module.__name__
    del sys.modules[module.__name__]


def test_flows_come_from_an_app_a_task_a_flow_a_module_or_a_list(app_module: str) -> None:
    assert flows_of(FakeApp()) == {"one": one}
    assert flows_of(solo) == {"solo": solo.flow}
    assert flows_of([one, solo]) == {"one": one, "solo": solo.flow}
    assert load_flows(f"{app_module}:app") == {"one": one}
    assert load_flows(app_module) == {"one": one}  # a bare module means its `app`
    assert load_flows(f"{app_module}:solo") == {"solo": solo.flow}
    module = sys.modules[app_module]
    assert flows_of(module) == {"solo": solo.flow, "one": one}


def test_bad_references_are_configuration_errors(app_module: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot import"):
        load_flows("no_such_module_anywhere:app")
    with pytest.raises(ConfigurationError, match="has no 'nothing'"):
        load_flows(f"{app_module}:nothing")
    with pytest.raises(ConfigurationError, match="not an app"):
        flows_of(42)
    with pytest.raises(ConfigurationError, match="two different flows"):
        flows_of([one, Flow("one")])


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "pgflow_kombu.worker", logging.WARNING, __file__, 1, "hi %s", ("x",), None
    )
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_logs_carry_their_fields_as_text_and_as_json() -> None:
    text = TextFormatter().format(record(event="task_failed", run_id="r1"))
    assert text.endswith("pgflow_kombu.worker: hi x [event=task_failed run_id=r1]")
    entry = json.loads(JsonFormatter().format(record(event="task_failed", attempt=2)))
    assert (entry["message"], entry["event"], entry["attempt"], entry["level"]) == (
        "hi x",
        "task_failed",
        2,
        "warning",
    )
