"""The examples' flows, run eagerly (no database): their definitions and handlers work."""

from __future__ import annotations

import pytest

from pgflow_kombu.errors import StepFailed, StepInputError


def test_order_flow() -> None:
    from examples.order_flow import order

    output = order.run_eager(
        {
            "order_id": 7,
            "email": "a@b.c",
            "items": [{"sku": "x", "quantity": 2, "price_cents": 100}],
        }
    )
    assert output == {"notify": {"to": "a@b.c", "total_cents": 200, "parcel": ["2 x x"]}}


def test_order_flow_rejects_bad_input_naming_the_field() -> None:
    from examples.order_flow import order

    with pytest.raises(StepInputError, match="quantity"):
        order.run_eager(
            {"order_id": 7, "email": "a", "items": [{"sku": "x", "quantity": 0, "price_cents": 1}]}
        )
    with pytest.raises(StepFailed, match="has no items"):
        order.run_eager({"order_id": 7, "email": "a", "items": []})


def test_fanout_with_async_handlers_and_empty_input() -> None:
    from examples.fanout import stats

    assert stats.run_eager(["https://a"]) == {"total": {"documents": 1, "words": 15}}
    assert stats.run_eager([]) == {"total": {"documents": 0, "words": 0}}


def test_pipeline_chains() -> None:
    from examples.pipeline import etl, simple

    assert etl.run_eager({"source": "1,2,3"}) == {"report": "sum of squares 14, largest square 9"}
    assert simple.run_eager({"source": "5,6"}) == {"total": 11}


def test_delayed_jobs_task_is_a_plain_function_too() -> None:
    from examples.delayed_jobs import send_email

    assert send_email("a@b.c", "hi")["to"] == "a@b.c"


def test_the_readmes_separate_worker_example_succeeds() -> None:
    import json
    import re
    from pathlib import Path

    from examples.order_flow import order

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    command = re.search(r"pgflow-kombu runs start process_order --wait \\\n\s+'(.+)'", readme)
    assert command is not None
    output = order.run_eager(json.loads(command.group(1)))
    assert output == {"notify": {"to": "a@b.c", "total_cents": 2500, "parcel": ["2 x book"]}}
