"""The dashboard over plain HTTP (Starlette's TestClient): every page, the actions and their
CSRF and read-only refusals, basic auth, the host's auth hook, a path prefix, /metrics, the
live feed's notifications and keyset pages of runs."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.testclient import TestClient

from pgflow_kombu.client import Client
from pgflow_kombu.dashboard import create_app
from pgflow_kombu.dashboard.live import Feed
from pgflow_kombu.dashboard.security import CSRF_COOKIE, PASSWORD_ENV, USER_ENV
from pgflow_kombu.db.connect import connect
from pgflow_kombu.flows import Flow
from pgflow_kombu.worker import Worker
from tests.support.dashboard import free_port
from tests.support.sql import test_query

pytestmark = pytest.mark.timeout(120)

pipeline = Flow("dash_pipeline", base_delay=0)


@pipeline.step
def fetch(run: int) -> list[int]:
    return list(range(run))


@pipeline.map(over="fetch")
def square(item: int) -> int:
    return item * item


@pipeline.step(depends_on=["square"])
def total(run: int, square: list[int]) -> dict[str, Any]:
    return {"sum": sum(square), "blob": "x" * 5000}


broken = Flow("dash_broken", max_attempts=1, base_delay=0)


@broken.step
def explode(run: Any) -> None:
    raise RuntimeError("boom from the dashboard test")


gated = Flow("dash_gated", base_delay=0)


@gated.step
def first(run: dict[str, Any]) -> int:
    return 1


@gated.step(depends_on=["first"], if_={"run": {"go": True}})
def maybe(run: dict[str, Any], first: int) -> int:
    return 2


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    c = Client(db_url)
    yield c
    c.close()


@pytest.fixture
def finished(db_url: str, client: Client) -> dict[str, UUID]:
    """One completed run of each flow's worker, and one failed run."""
    worker = Worker({"dash_pipeline": pipeline, "dash_broken": broken}, db_url)
    worker.start()
    try:
        done = client.start_flow_sync(pipeline, 3, timeout=60)
        failed = client.wait(
            client.start_flow(broken, {"k": 1}), timeout=60, raise_on_failure=False
        )
    finally:
        worker.stop(5)
    assert (done.status, failed.status) == ("completed", "failed")
    return {"completed": done.run_id, "failed": failed.run_id}


def http(db_url: str, **options: Any) -> TestClient:
    return TestClient(create_app(db_url, basic_auth=None, **options))


def token_of(page: Any) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page if isinstance(page, str) else page.text)
    assert match, "no CSRF field on the page"
    return match.group(1)


def test_every_page_renders(db_url: str, finished: dict[str, UUID]) -> None:
    with http(db_url) as web:
        overview = web.get("/")
        assert overview.status_code == 200
        assert "Runs per minute" in overview.text and "<polyline" in overview.text
        assert "dash_broken" in overview.text  # failing most

        flows = web.get("/flows")
        assert flows.status_code == 200
        assert 'id="step-square" class="step status-none map"' in flows.text
        assert "completed 1" in flows.text

        flow = web.get("/flows/dash_pipeline")
        assert flow.status_code == 200
        assert "p95" in flow.text and ">square<" in flow.text

        runs = web.get("/runs")
        assert str(finished["completed"]) in runs.text and str(finished["failed"]) in runs.text
        only_failed = web.get("/runs", params={"status": "failed"})
        assert str(finished["failed"]) in only_failed.text
        assert str(finished["completed"]) not in only_failed.text
        by_flow = web.get("/runs", params={"flow": "dash_pipeline", "since": "2000-01-01T00:00"})
        assert str(finished["completed"]) in by_flow.text
        assert str(finished["failed"]) not in by_flow.text
        nothing = web.get("/runs", params={"until": "2000-01-01T00:00"})
        assert "no run" in nothing.text

        found = web.get(
            "/runs", params={"run_id": str(finished["completed"])}, follow_redirects=False
        )
        assert found.status_code == 303
        assert found.headers["location"].endswith(f"/runs/{finished['completed']}")

        run = web.get(f"/runs/{finished['completed']}")
        assert run.status_code == 200
        for step in ("fetch", "square", "total"):
            assert f'id="step-{step}" class="step status-completed' in run.text
        assert "<details" in run.text and "characters" in run.text  # the 5000-char output folded
        assert 'class="timeline"' in run.text

        failed = web.get(f"/runs/{finished['failed']}")
        assert 'id="step-explode" class="step status-failed' in failed.text
        assert "boom from the dashboard test" in failed.text

        workers = web.get("/workers")
        assert workers.status_code == 200 and "dash_pipeline" in workers.text
        assert "Python" in workers.text

        assert web.get("/runs/not-a-uuid").status_code == 400
        assert web.get(f"/runs/{UUID(int=1)}").status_code == 404
        assert web.get("/flows/nope").status_code == 404
        assert web.get("/runs", params={"after": "garbage!"}).status_code == 400
        assert web.get("/static/dashboard.js").status_code == 200


def test_metrics_are_served(db_url: str, finished: dict[str, UUID]) -> None:
    with http(db_url) as web:
        body = web.get("/metrics/").text
    assert 'pgflow_kombu_queue_depth{flow="dash_pipeline"}' in body


def test_start_a_run_from_the_flow_page(db_url: str, client: Client) -> None:
    client.compile_flow(pipeline.shape())
    with http(db_url) as web:
        page = web.get("/flows/dash_pipeline")
        token = token_of(page)
        started = web.post(
            "/flows/dash_pipeline/start",
            data={"csrf": token, "input": "4"},
            follow_redirects=False,
        )
        assert started.status_code == 303
        run_id = started.headers["location"].rsplit("/", 1)[1]
        assert client.get_run(run_id).input == 4

        bad = web.post("/flows/dash_pipeline/start", data={"csrf": token, "input": "{nope"})
        assert bad.status_code == 400 and "not JSON" in bad.text
        nan = web.post("/flows/dash_pipeline/start", data={"csrf": token, "input": "NaN"})
        assert nan.status_code == 400
    assert [r.run_id for r in client.list_runs()] == [UUID(run_id)]  # nothing else written


def test_actions_need_the_csrf_token(db_url: str, client: Client) -> None:
    client.compile_flow(pipeline.shape())
    with http(db_url) as web:
        token = token_of(web.get("/flows/dash_pipeline"))
        missing = web.post("/flows/dash_pipeline/start", data={"input": "1"})
        assert missing.status_code == 403 and "CSRF" in missing.text
        other = web.post("/flows/dash_pipeline/start", data={"csrf": token + "x", "input": "1"})
        assert other.status_code == 403
        # A token that is not signed by the app is refused even when cookie and field agree.
        web.cookies.set(CSRF_COOKIE, "forged.0000")
        forged = web.post("/flows/dash_pipeline/start", data={"csrf": "forged.0000", "input": "1"})
        assert forged.status_code == 403
    with http(db_url) as other_app:  # a new cookie-less browser posting a token it saw elsewhere
        stolen = other_app.post("/flows/dash_pipeline/start", data={"csrf": token, "input": "1"})
        assert stolen.status_code == 403
    assert client.list_runs() == []


def test_read_only_refuses_actions(db_url: str, client: Client) -> None:
    client.compile_flow(pipeline.shape())
    with http(db_url, read_only=True) as web:
        page = web.get("/flows/dash_pipeline")
        assert "Start run" not in page.text and "read-only" in page.text
        cookie = web.cookies.get(CSRF_COOKIE)
        assert cookie
        refused = web.post("/flows/dash_pipeline/start", data={"csrf": cookie, "input": "1"})
        assert refused.status_code == 403 and "read-only" in refused.text
    assert client.list_runs() == []


def test_basic_auth_from_the_environment(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USER_ENV, "ops")
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    with TestClient(create_app(db_url)) as web:
        denied = web.get("/")
        assert denied.status_code == 401 and "Basic" in denied.headers["www-authenticate"]
        assert web.get("/", auth=("ops", "wrong")).status_code == 401
        assert web.get("/metrics/").status_code == 401
        assert web.get("/", auth=("ops", "s3cret")).status_code == 200


def test_host_auth_hook_and_path_prefix(db_url: str, finished: dict[str, UUID]) -> None:
    async def staff_only(request: Request) -> bool:
        await asyncio.sleep(0)
        return request.headers.get("x-staff") == "yes"

    host = Starlette(
        routes=[Mount("/ops/pgflow", app=create_app(db_url, basic_auth=None, auth=staff_only))]
    )
    with TestClient(host) as web:
        assert web.get("/ops/pgflow/").status_code == 403
        page = web.get(f"/ops/pgflow/runs/{finished['completed']}", headers={"x-staff": "yes"})
        assert page.status_code == 200
        assert 'href="/ops/pgflow/flows/dash_pipeline"' in page.text
        assert 'href="/ops/pgflow/static/dashboard.css"' in page.text
        runs = web.get("/ops/pgflow/runs", headers={"x-staff": "yes"})
        assert f'href="/ops/pgflow/runs/{finished["failed"]}"' in runs.text
    plain = Starlette(
        routes=[
            Mount("/p", app=create_app(db_url, basic_auth=None, auth=lambda r: "ok" in r.url.query))
        ]
    )
    with TestClient(plain) as web:  # a plain function works as the check too
        assert web.get("/p/workers").status_code == 403
        assert web.get("/p/workers?ok").status_code == 200


def test_runs_page_goes_by_keyset_pages(db_url: str, client: Client) -> None:
    client.compile_flow(pipeline.shape())
    started = {str(r) for r in client.start_many(pipeline, list(range(60)))}
    link = re.compile(r'id="next-page" href="([^"]+)"')
    run_link = re.compile(r'href="/runs/([0-9a-f-]{36})"')
    with http(db_url) as web:
        first = web.get("/runs", params={"flow": "dash_pipeline"}).text
        found = link.search(first)
        assert found and "flow=dash_pipeline" in found.group(1) and "after=" in found.group(1)
        second = web.get(found.group(1).replace("&amp;", "&")).text
    assert 'data-refresh="0"' in second  # an older page stays still
    assert link.search(second) is None
    pages = [run_link.findall(first), run_link.findall(second)]
    assert [len(p) for p in pages] == [50, 10]
    assert set(pages[0]) | set(pages[1]) == started


def test_live_feed_fans_out_step_notifications_sent_only_while_a_dashboard_listens(
    db_url: str, client: Client
) -> None:
    client.compile_flow(broken.shape())
    with connect(db_url) as spy:
        spy.execute(test_query("dashboard_listen_steps"))
        client.start_flow(broken, None)  # no dashboard: no step notification at all
        assert list(spy.notifies(timeout=0.5)) == []

        async def scenario() -> None:
            feed = Feed(db_url)
            first, second = feed.subscribe(), feed.subscribe()
            await asyncio.wait_for(feed.listening.wait(), 10)
            run_id = await asyncio.to_thread(client.start_flow, broken, None)
            event = await asyncio.wait_for(first.get(), 10)
            assert (event.kind, event.run_id, event.step_slug, event.status) == (
                "step",
                str(run_id),
                "explode",
                "started",
            )
            assert await asyncio.wait_for(second.get(), 10) == event
            feed.unsubscribe(first)
            feed.unsubscribe(second)
            await feed.close()

        asyncio.run(scenario())
        assert len(list(spy.notifies(timeout=2, stop_after=1))) == 1  # the spy heard it too
        count = spy.execute(test_query("dashboard_listeners")).fetchone()
        assert count == (0,)  # the closed feed removed its registration
        client.start_flow(broken, None)
        assert list(spy.notifies(timeout=0.5)) == []


def test_workers_page_shows_typescript_workers_live_and_stale(db_url: str, client: Client) -> None:
    client.compile_flow(pipeline.shape())
    with connect(db_url) as conn:
        for worker_id, age in ((UUID(int=7), 1), (UUID(int=8), 300)):
            conn.execute(
                test_query("dashboard_add_worker"),
                {
                    "worker_id": worker_id,
                    "queue_name": "dash_pipeline",
                    "function_name": "pgflow-edge-worker",
                    "age": age,
                },
            )
    with http(db_url) as web:
        rows = re.findall(r'<tr class="(live|stale)">(.*?)</tr>', web.get("/workers").text, re.S)
        overview = web.get("/").text
    assert [
        (state, "TypeScript" in row, str(UUID(int=n)) in row)
        for (state, row), n in zip(rows, (7, 8), strict=True)
    ] == [
        ("live", True, True),
        ("stale", True, True),
    ]
    assert re.search(r"<strong[^>]*>1</strong> live</a>\s*· 1 stale", overview)


class BareClient(Client):
    """A client declaring no run control (its methods are still there): the dashboard shows no
    control button and refuses the actions."""

    run_control = False


class ControlClient(Client):
    """The run control API's methods, recording their calls (the dashboard only wires them)."""

    calls: list[tuple[str, str]]

    def retry_run(self, run_id: UUID | str) -> int:
        self.calls.append(("retry", str(run_id)))
        return 1

    def delete_run(self, run_id: UUID | str) -> None:
        self.calls.append(("delete", str(run_id)))

    def cancel_run(self, run_id: UUID | str, *, reason: str | None = None) -> bool:
        self.calls.append(("cancel", str(run_id)))
        return False  # as for a run that finished meanwhile


def test_control_buttons_appear_with_the_control_api(
    db_url: str, finished: dict[str, UUID]
) -> None:
    failed = str(finished["failed"])
    bare = BareClient(db_url)
    with TestClient(create_app(db_url, basic_auth=None, client=bare)) as web:
        page = web.get(f"/runs/{failed}").text
        assert "retry-run" not in page and "delete-run" not in page and "cancel-run" not in page
        refused = web.post(f"/runs/{failed}/retry", data={"csrf": web.cookies.get(CSRF_COOKIE)})
        assert refused.status_code == 403 and "not available" in refused.text

    control = ControlClient(db_url)
    control.calls = []
    with TestClient(create_app(db_url, basic_auth=None, client=control)) as web:
        page = web.get(f"/runs/{failed}").text
        assert 'id="retry-run"' in page and 'id="delete-run"' in page
        assert 'id="cancel-run"' not in page  # a finished run cannot be cancelled
        done = web.get(f"/runs/{finished['completed']}").text
        assert 'id="retry-run"' not in done
        retried = web.post(
            f"/runs/{failed}/retry", data={"csrf": token_of(page)}, follow_redirects=False
        )
        assert retried.status_code == 303 and retried.headers["location"].endswith(
            f"/runs/{failed}"
        )
        deleted = web.post(
            f"/runs/{failed}/delete", data={"csrf": token_of(page)}, follow_redirects=False
        )
        assert deleted.status_code == 303 and deleted.headers["location"].endswith("/runs")
        assert web.post(f"/runs/{failed}/cancel", data={}).status_code == 403  # no CSRF token
        late = web.post(f"/runs/{failed}/cancel", data={"csrf": token_of(page)})
        assert late.status_code == 409 and "had finished" in late.text
    assert control.calls == [("retry", failed), ("delete", failed), ("cancel", failed)]

    with TestClient(create_app(db_url, basic_auth=None, client=control, read_only=True)) as web:
        page = web.get(f"/runs/{failed}").text
        assert "retry-run" not in page
        cookie = web.cookies.get(CSRF_COOKIE)
        assert web.post(f"/runs/{failed}/retry", data={"csrf": cookie}).status_code == 403
    assert len(control.calls) == 3
    bare.close()
    control.close()


def test_a_skipped_step_reads_skipped_on_the_run_page(db_url: str, client: Client) -> None:
    worker = Worker({"dash_gated": gated}, db_url)
    worker.start()
    try:
        run = client.start_flow_sync(gated, {"go": False}, timeout=60)
    finally:
        worker.stop(5)
    with http(db_url) as web:
        page = web.get(f"/runs/{run.run_id}").text
    assert 'id="step-first" class="step status-completed' in page
    assert 'id="step-maybe" class="step status-skipped' in page
    assert "skipped: " in page


def test_a_large_map_step_lists_its_first_tasks(db_url: str, client: Client) -> None:
    worker = Worker({"dash_pipeline": pipeline}, db_url, concurrency=4)
    worker.start()
    try:
        run = client.start_flow_sync(pipeline, 150, timeout=60)
    finally:
        worker.stop(5)
    with http(db_url) as web:
        page = web.get(f"/runs/{run.run_id}").text
    square = page[page.index('id="detail-square"') : page.index('id="detail-total"')]
    assert square.count("pill status-completed") == 1 + 100  # the step's pill and 100 tasks
    assert "… and 50 more tasks" in square
    assert '<td class="num">99</td>' in square and '<td class="num">100</td>' not in square


def test_cancelled_runs_count_and_read_as_cancelled(
    db_url: str, client: Client, finished: dict[str, UUID]
) -> None:
    since = datetime.now(timezone.utc) - timedelta(hours=1)
    assert client.flow_status_counts("dash_broken", since=since) == {
        "started": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }
    with connect(db_url) as conn:
        conn.execute(test_query("dashboard_mark_cancelled"), {"run_id": finished["failed"]})
    counts = client.flow_status_counts("dash_broken", since=since)
    assert (counts["failed"], counts["cancelled"]) == (0, 1)
    with http(db_url) as web:
        listed = web.get("/runs", params={"status": "cancelled"}).text
        flows = web.get("/flows").text
    assert str(finished["failed"]) in listed and 'status-cancelled">cancelled' in listed
    assert "cancelled 1" in flows


def test_overview_shows_waiting_messages_per_flow(db_url: str, client: Client) -> None:
    client.compile_flow(broken.shape())
    client.start_many(broken, [1, 2])  # no worker: both messages wait in the queue
    with http(db_url) as web:
        page = web.get("/").text
    queues = page[page.index('id="ov-queues"') : page.index('id="ov-workers"')]
    row = re.search(
        r"dash_broken</a></td>\s*<td class=\"num\">(\d+)</td><td class=\"num\">([^<]*)</td>", queues
    )
    assert row and row.group(1) == "2" and row.group(2).endswith(("ms", " s"))
    assert "started 2" in page


def test_pages_carry_security_headers_and_a_lost_database_answers_503(db_url: str) -> None:
    with http(db_url) as web:
        page = web.get("/flows")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=2"
    with TestClient(create_app(down, basic_auth=None, metrics=False)) as web:
        answer = web.get("/workers")
    assert answer.status_code == 503 and 'id="error-message"' in answer.text
