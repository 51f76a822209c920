"""``upsert_flow``: compiled / recompiled, destructive, and one definition wins whole when two
callers replace one slug at once (an advisory lock per slug)."""

from __future__ import annotations

import threading
from typing import Any

from pgflow_kombu import Client, FlowMismatch, PgFlow
from pgflow_kombu.flows import define_flow
from pgflow_kombu.flows.shapes import FlowShape

FIRST: dict[str, Any] = {
    "max_attempts": 2,
    "steps": [{"slug": "fetch"}, {"slug": "store", "deps": ["fetch"], "timeout": 9}],
}
SECOND: dict[str, Any] = {
    "max_attempts": 5,
    "base_delay": 2,
    "steps": [{"slug": "load"}, {"slug": "split", "step_type": "map"}, {"slug": "merge"}],
}


def shape_of(slug: str, definition: dict[str, Any]) -> FlowShape:
    """The shape the database should hold: pgflow's defaults filled in as create_flow does."""
    shape = define_flow(slug, **definition).shape()
    shape["options"] = {"max_attempts": 3, "base_delay": 5, "timeout": 60, **shape["options"]}
    return shape


def test_new_flows_are_compiled_and_existing_ones_recompiled(db_url: str) -> None:
    app = PgFlow(db_url)
    try:
        assert app.upsert_flow("etl", **FIRST) == {"status": "compiled", "differences": []}
        assert app.client.get_flow_shape("etl") == shape_of("etl", FIRST)
        again = app.upsert_flow("etl", **SECOND)
        assert again["status"] == "recompiled"
        assert any("Step count differs" in d for d in again["differences"])
        assert app.client.get_flow_shape("etl") == shape_of("etl", SECOND)
        # The seeds' base_delay default (1) is not applied: pgflow's create_flow default (5) is.
        app.upsert_flow("defaults", steps=[{"slug": "only"}])
        assert app.client.get_flow_shape("defaults")["options"]["base_delay"] == 5
        same = app.upsert_flow("defaults", steps=[{"slug": "only"}])
        assert same == {"status": "recompiled", "differences": []}
    finally:
        app.close()


def test_concurrent_upserts_of_one_slug_leave_exactly_one_definition(db_url: str) -> None:
    clients = [Client(db_url), Client(db_url)]
    tries = 30
    try:
        for client in clients:
            client.flow_exists("warm_up")  # open both pools before the races
        for attempt in range(tries):
            slug = f"race_{attempt}"
            barrier = threading.Barrier(2)
            results: dict[int, Any] = {}

            def upsert(
                i: int,
                definition: dict[str, Any],
                slug: str = slug,
                barrier: threading.Barrier = barrier,
                results: dict[int, Any] = results,
            ) -> None:
                barrier.wait()
                try:
                    results[i] = clients[i].upsert_flow(slug, **definition)["status"]
                except Exception as exc:  # reported below with the try that failed
                    results[i] = exc

            threads = [
                threading.Thread(target=upsert, args=(i, d)) for i, d in enumerate((FIRST, SECOND))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(map(str, results.values())) == ["compiled", "recompiled"], (
                attempt,
                results,
            )
            stored = clients[0].get_flow_shape(slug)
            assert stored in (shape_of(slug, FIRST), shape_of(slug, SECOND)), (attempt, stored)
            # The definition left is the one compiled last.
            last = 0 if results[0] == "recompiled" else 1
            assert stored == shape_of(slug, (FIRST, SECOND)[last]), attempt
    finally:
        for client in clients:
            client.close()


def test_concurrent_first_uses_of_one_slug_never_merge_definitions(db_url: str) -> None:
    """Two apps whose code defines one slug differently start it at once: the first compiles
    its flow whole, the other is told the database differs (it used to add its steps)."""
    tries = 10
    for attempt in range(tries):
        slug = f"first_use_{attempt}"
        apps = [PgFlow(db_url), PgFlow(db_url)]
        flows = [define_flow(slug, **d) for d in (FIRST, SECOND)]
        for app, flow in zip(apps, flows, strict=True):
            app.register(flow)
            app.client.flow_exists("warm_up")
        barrier = threading.Barrier(2)
        outcomes: dict[int, str] = {}

        def ensure(
            i: int,
            barrier: threading.Barrier = barrier,
            outcomes: dict[int, str] = outcomes,
            flows: list[Any] = flows,
            apps: list[PgFlow] = apps,
        ) -> None:
            barrier.wait()
            try:
                apps[i].ensure_flow(flows[i])
                outcomes[i] = "ensured"
            except FlowMismatch:
                outcomes[i] = "mismatch"

        threads = [threading.Thread(target=ensure, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        try:
            assert sorted(outcomes.values()) == ["ensured", "mismatch"], (attempt, outcomes)
            winner = next(i for i, o in outcomes.items() if o == "ensured")
            stored = apps[0].client.get_flow_shape(slug)
            assert stored == shape_of(slug, (FIRST, SECOND)[winner]), (attempt, stored)
        finally:
            for app in apps:
                app.close()
