"""Benchmark: how long the dashboard's pages take on a database holding many runs.

A scratch database gets one three-step flow, a few real runs (a worker completes them, so a run
page has tasks) and ``--runs`` seeded run rows (default 100,000) started over the last
``--hours`` (default 2: a busy system; the overview then counts half of them in its last hour)
(80 % completed, 10 % failed, 10 % started). The dashboard is served by uvicorn in a thread;
each page is fetched ``--repeat`` times over HTTP and the median and best times are printed,
including a Runs page reached through a keyset cursor half-way down the list (as fast as the
first one: no OFFSET). With ``--browser`` each page is also opened in headless Chromium and the
time to its ``load`` event printed.

    python benchmarks/dashboard.py [--url postgresql://...] [--runs 100000] [--hours 2]
                                   [--repeat 5] [--browser]

The URL is an admin URL (PGFLOW_TEST_DATABASE_URL by default): a scratch database is created
and dropped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from pgflow_kombu.client import Client  # noqa: E402
from pgflow_kombu.db import migrations  # noqa: E402
from pgflow_kombu.db.admin import create_database, drop_database  # noqa: E402
from pgflow_kombu.db.connect import connect  # noqa: E402
from pgflow_kombu.db.urls import with_database  # noqa: E402
from pgflow_kombu.flows import Flow  # noqa: E402
from pgflow_kombu.worker import Worker  # noqa: E402
from tests.support.dashboard import seed_runs, serving  # noqa: E402

orders = Flow("bench_orders", base_delay=0)


@orders.step
def validate(run: int) -> list[int]:
    return list(range(run))


@orders.map(over="validate")
def price(item: int) -> int:
    return item * 10


@orders.step(depends_on=["price"])
def ship(run: int, price: list[int]) -> dict[str, Any]:
    return {"total": sum(price)}


def timed(web: httpx.Client, path: str, repeat: int) -> tuple[float, float, int]:
    times = []
    size = 0
    for _ in range(repeat):
        start = time.perf_counter()
        response = web.get(path)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
        size = len(response.content)
    return statistics.median(times), min(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("PGFLOW_TEST_DATABASE_URL"))
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument(
        "--hours", type=float, default=2.0, help="seeded runs start over this many hours"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--browser", action="store_true")
    args = parser.parse_args()
    if not args.url:
        parser.error("give --url or set PGFLOW_TEST_DATABASE_URL")
    name = f"bench_dashboard_{uuid.uuid4().hex[:8]}"
    with connect(args.url) as admin:
        create_database(admin, name)
    url = with_database(args.url, name)
    try:
        migrations.upgrade(url)
        client = Client(url)
        client.compile_flow(orders.shape())
        worker = Worker({orders.slug: orders}, url, heartbeat_interval=1.0)
        worker.start()
        try:
            real = [client.start_flow_sync(orders, n, timeout=60).run_id for n in (3, 5, 8)]
        finally:
            worker.stop(5)
        start = time.perf_counter()
        seed_runs(url, orders.slug, args.runs, spread=args.hours * 3600)
        seeded = time.perf_counter() - start
        middle = client.find_runs(limit=1000).next  # a cursor 1,000 runs down
        for _ in range(args.runs // 2 // 1000 - 1):
            assert middle is not None
            middle = client.find_runs(after=middle, limit=1000).next
        client.close()
        pages = [
            ("overview", "/"),
            ("flows", "/flows"),
            ("flow", f"/flows/{orders.slug}"),
            ("runs", "/runs"),
            ("runs, failed of the flow", f"/runs?flow={orders.slug}&status=failed"),
            ("runs, last 10 minutes", "/runs?since=" + _minutes_ago(10)),
            ("runs, half-way down", f"/runs?after={middle}"),
            ("run", f"/runs/{real[-1]}"),
            ("workers", "/workers"),
            ("metrics", "/metrics/"),
        ]
        print(
            f"{args.runs:,} seeded runs (+3 real ones) started over {args.hours:g} h, "
            f"seeded in {seeded:.1f} s"
        )
        with serving(url) as base, httpx.Client(base_url=base, timeout=60) as web:
            timed(web, "/", 1)  # warm-up: pools open, templates compiled
            print(f"{'page':<28} {'median ms':>10} {'best ms':>9} {'bytes':>9}")
            for label, path in pages:
                median, best, size = timed(web, path, args.repeat)
                print(f"{label:<28} {median * 1000:10.1f} {best * 1000:9.1f} {size:9,}")
            if args.browser:
                browser_times(base, pages)
    finally:
        with connect(args.url) as admin:
            drop_database(admin, name)


def browser_times(base: str, pages: list[tuple[str, str]]) -> None:
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page()
        print(f"{'page in Chromium':<28} {'load ms':>10}")
        for label, path in pages:
            if path.startswith("/metrics"):
                continue
            start = time.perf_counter()
            page.goto(base + path, wait_until="load")
            print(f"{label:<28} {(time.perf_counter() - start) * 1000:10.1f}")
        browser.close()


def _minutes_ago(minutes: int) -> str:
    from datetime import datetime, timedelta, timezone

    at = datetime.now(timezone.utc) - timedelta(minutes=minutes)
    return at.strftime("%Y-%m-%dT%H:%M")


if __name__ == "__main__":
    main()
