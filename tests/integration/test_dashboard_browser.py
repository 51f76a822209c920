"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright. A run's DAG changes colour live as a worker completes it; a run is started from the
page; a failed run is retried, then deleted, from its page; every page renders on 100,000 runs (the timings are printed by benchmarks/dashboard.py).

With ``PGFLOW_DASHBOARD_SCREENSHOTS=<dir>`` the tests save a PNG of each page there (the
README's come from ``docs/screenshots``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from pgflow_kombu.client import Client
from pgflow_kombu.flows import Flow
from pgflow_kombu.worker import Worker
from tests.support.dashboard import seed_runs, serving

pytestmark = pytest.mark.timeout(240)

CHROMIUM = os.environ.get("PGFLOW_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = os.environ.get("PGFLOW_DASHBOARD_SCREENSHOTS")

gate = threading.Event()  # the 'enrich' step waits for it: the test decides when it completes

orders = Flow("web_orders", base_delay=0)


@orders.step
def validate(run: dict[str, Any]) -> list[int]:
    return list(run["items"])


@orders.map(over="validate")
def price(item: int) -> int:
    return item * 10


@orders.step(depends_on=["validate"])
def enrich(run: dict[str, Any], validate: list[int]) -> dict[str, Any]:
    assert gate.wait(60), "the test never opened the gate"
    return {"customer": run.get("customer"), "items": len(validate)}


@orders.step(depends_on=["price", "enrich"])
def ship(run: dict[str, Any], price: list[int], enrich: dict[str, Any]) -> dict[str, Any]:
    return {"total": sum(price), **enrich}


failing = Flow("web_failing", max_attempts=1, base_delay=0)


@failing.step
def charge(run: Any) -> None:
    raise ValueError("card declined")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def test_run_dag_changes_colour_live_and_a_run_starts_from_the_page(
    db_url: str, page: Page
) -> None:
    gate.clear()
    client = Client(db_url)
    worker = Worker({"web_orders": orders, "web_failing": failing}, db_url, heartbeat_interval=0.5)
    worker.start()
    try:
        client.wait(client.start_flow(failing, {"card": "4000"}), raise_on_failure=False)
        run_id = client.start_flow(orders, {"customer": "ada", "items": [1, 2, 3]})
        with serving(db_url) as base:
            page.goto(f"{base}/runs/{run_id}")
            expect(page.locator("#live.on")).to_be_visible()
            expect(page.locator("#step-enrich.status-started")).to_be_visible()
            expect(page.locator("#step-ship.status-created")).to_be_visible()
            page.evaluate("window.__sameDocument = true")
            gate.set()  # the worker completes enrich, then ship: the page hears it
            expect(page.locator("#step-enrich.status-completed")).to_be_visible(timeout=30_000)
            expect(page.locator("#step-ship.status-completed")).to_be_visible(timeout=30_000)
            expect(page.locator("#run-status")).to_have_text("completed")
            assert page.evaluate("window.__sameDocument") is True  # no reload: live updates
            expect(page.locator("#run-output")).to_contain_text('"total": 60')
            shot(page, "run")

            page.goto(f"{base}/flows/web_orders")
            page.fill("#input", '{"customer": "grace", "items": [4]}')
            page.click("#start-run")
            expect(page.locator("h1")).to_contain_text("Run ")
            expect(page.locator("#step-ship.status-completed")).to_be_visible(timeout=30_000)
            started = page.url.rsplit("/", 1)[1]
            assert client.get_run(started).input == {"customer": "grace", "items": [4]}

            page.goto(f"{base}/flows/web_orders")
            page.fill("#input", "{not json")
            page.click("#start-run")
            expect(page.locator("#input-error")).to_contain_text("not JSON")
            assert len(client.list_runs(flow_slug="web_orders")) == 2

            for path, name in [
                ("/", "overview"),
                ("/flows", "flows"),
                ("/flows/web_orders", "flow"),
                ("/runs", "runs"),
                ("/workers", "workers"),
            ]:
                page.goto(base + path)
                expect(page.locator("h1")).to_be_visible()
                shot(page, name)
            expect(page.locator("#workers-list")).to_contain_text("Python")
            page.goto(f"{base}/runs?status=failed")
            expect(page.locator("#runs-list")).to_contain_text("failed")
    finally:
        gate.set()
        worker.stop(5)
        client.close()


def test_pages_render_on_100000_runs(db_url: str, page: Page) -> None:
    client = Client(db_url)
    try:
        client.compile_flow(orders.shape())
        seed_runs(db_url, "web_orders", 100_000)
        newest = client.find_runs(limit=1).runs[0]
        with serving(db_url) as base:
            page.goto(base + "/")
            expect(page.locator("#ov-chart polyline.completed")).to_have_count(1)
            page.goto(base + "/flows")
            expect(page.locator("#flow-web_orders svg.dag")).to_be_visible()
            page.goto(base + "/runs?flow=web_orders&status=failed")
            expect(page.locator("#runs-list tbody tr")).to_have_count(50)
            page.click("#next-page")
            expect(page.locator("#runs-list tbody tr")).to_have_count(50)
            page.goto(f"{base}/runs/{newest.run_id}")
            expect(page.locator("#run-status")).to_be_visible()
            page.goto(base + "/workers")
            expect(page.locator("h1")).to_have_text("Workers")
    finally:
        client.close()


def test_runs_list_shows_new_runs_live(db_url: str, page: Page) -> None:
    client = Client(db_url)
    try:
        client.compile_flow(failing.shape())
        with serving(db_url) as base:
            page.goto(f"{base}/runs")
            expect(page.locator("#live.on")).to_be_visible()
            expect(page.locator("#runs-list")).to_contain_text("no run")
            page.evaluate("window.__sameDocument = true")
            run_id = client.start_flow(failing, {"card": "1"})  # no worker: it stays started
            expect(page.locator("#runs-list")).to_contain_text(str(run_id), timeout=20_000)
            assert page.evaluate("window.__sameDocument") is True
    finally:
        client.close()


# -- run control from the page ---------------------------------------------------------------------

second_try = threading.Event()  # set by the test: the 'settle' step fails until then

flaky = Flow("web_flaky", max_attempts=1, base_delay=0)


@flaky.step
def reserve(run: Any) -> int:
    return 1


@flaky.step(depends_on=["reserve"])
def settle(run: Any, reserve: int) -> int:
    if not second_try.is_set():
        raise RuntimeError("the bank said no")
    return reserve + 1


def test_a_failed_run_is_retried_then_deleted_from_the_page(db_url: str, page: Page) -> None:
    client = Client(db_url)
    worker = Worker({"web_flaky": flaky}, db_url)
    worker.start()
    try:
        run = client.wait(client.start_flow(flaky, {}), raise_on_failure=False)
        assert run.status == "failed"
        second_try.set()
        with serving(db_url) as base:
            page.goto(f"{base}/runs/{run.run_id}")
            expect(page.locator("#step-settle.status-failed")).to_be_visible()
            page.click("#retry-run")
            expect(page.locator("#step-settle.status-completed")).to_be_visible(timeout=30000)
            expect(page.locator("#run-status")).to_have_text("completed")
            page.on("dialog", lambda dialog: dialog.accept())
            page.click("#delete-run")
            expect(page.locator("h1")).to_have_text("Runs")
        assert client.find_runs(flow_slug="web_flaky").runs == []  # deleted from the page
    finally:
        worker.stop(5)
        client.close()
