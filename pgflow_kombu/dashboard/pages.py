"""The pages (GET): overview, flows, a flow, runs, a run, workers; and the live event stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING
from uuid import UUID

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from pgflow_kombu.dashboard.formatting import COUNT_CAP
from pgflow_kombu.dashboard.paths import path_for
from pgflow_kombu.dashboard.svg import dag_svg, minutes_chart_svg, timeline_svg
from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.flows.shapes import FlowShape
from pgflow_kombu.settings import WORKER_DEFAULTS

if TYPE_CHECKING:
    from pgflow_kombu.dashboard.app import Dashboard

__all__ = ["routes"]

LIVE_AFTER = WORKER_DEFAULTS.stalled_after  # seconds: a worker that heartbeated within this is live
WORKERS_SINCE = timedelta(hours=1)  # the workers page lists those seen within this
FLOW_WINDOW = timedelta(hours=24)  # runs by status and percentiles of the flows pages
KEEPALIVE = 15.0  # seconds between comments on an idle event stream
TASKS_SHOWN = 100  # tasks listed per step on a run page (a map step may have thousands)
TIMELINE_TASKS = 50  # tasks per step drawn on a run's timeline
LISTEN_WAIT = 5.0  # seconds an event stream waits for the feed to listen before answering


def routes(d: Dashboard) -> list[Route]:
    def overview(request: Request) -> Response:
        client = d.client
        now = datetime.now(timezone.utc)
        minutes = client.runs_per_minute(minutes=60)
        workers = client.worker_activity(since=now - WORKERS_SINCE)
        live = [w for w in workers if _is_live(w.last_heartbeat_at, w.deprecated_at, now)]
        return d.render(
            request,
            "overview.html",
            page="overview",
            chart=minutes_chart_svg(minutes),
            totals={
                kind: sum(getattr(m, kind) for m in minutes)
                for kind in ("started", "completed", "failed")
            },
            depths=client.queue_depths(),
            live_workers=len(live),
            stale_workers=len(workers) - len(live),
            failing=client.failing_flows(since=now - timedelta(hours=1)),
        )

    def flows(request: Request) -> Response:
        client = d.client
        since = datetime.now(timezone.utc) - FLOW_WINDOW
        items = []
        for info in client.list_flows():
            shape = client.get_flow_shape(info.flow_slug)
            items.append(
                {
                    "info": info,
                    "shape": shape,
                    "dag": dag_svg(shape["steps"]),
                    "counts": client.flow_status_counts(info.flow_slug, since=since, cap=COUNT_CAP),
                }
            )
        return d.render(request, "flows.html", page="flows", flows=items)

    def flow(request: Request) -> Response:
        client = d.client
        slug = request.path_params["slug"]
        shape = client.get_flow_shape(slug)
        since = datetime.now(timezone.utc) - FLOW_WINDOW
        return d.render(
            request,
            "flow.html",
            page="flows",
            shape=shape,
            dag=dag_svg(shape["steps"]),
            counts=client.flow_status_counts(slug, since=since, cap=COUNT_CAP),
            durations=sorted(
                client.step_durations(slug, since=since),
                key=lambda s: _step_order(shape, s.step_slug),
            ),
            recent=client.flow_history(slug, limit=10),
        )

    def runs(request: Request) -> Response:
        q = request.query_params
        if q.get("run_id"):  # find by id
            run_id = _run_id(q["run_id"])
            return RedirectResponse(path_for(request, "run", run_id=str(run_id)), status_code=303)
        page = d.client.find_runs(
            flow_slug=q.get("flow") or None,
            status=q.get("status") or None,
            since=_when(q.get("since"), "since"),
            until=_when(q.get("until"), "until"),
            after=q.get("after") or None,
            limit=50,
        )
        kept = {k: v for k, v in q.items() if k != "after" and v}
        return d.render(
            request,
            "runs.html",
            page="runs",
            runs=page.runs,
            next=page.next,
            query=kept,
            older=bool(q.get("after")),
            flow_slugs=[f.flow_slug for f in d.client.list_flows()],
        )

    def run(request: Request) -> Response:
        client = d.client
        run = client.get_run_with_states(_run_id(request.path_params["run_id"]))
        shape = client.get_flow_shape(run.flow_slug)
        statuses = {s.step_slug: s.status for s in run.step_states}
        order = {s["slug"]: i for i, s in enumerate(shape["steps"])}
        states = sorted(run.step_states, key=lambda s: order.get(s.step_slug, 0))
        bars = [
            (
                f"{t.step_slug}[{t.task_index}]" if len(s.tasks) > 1 else t.step_slug,
                t.status,
                t.queued_at,
                t.started_at,
                t.completed_at or t.failed_at,
            )
            for s in states
            for t in s.tasks[:TIMELINE_TASKS]
        ]
        return d.render(
            request,
            "run.html",
            page="runs",
            run=run,
            states=states,
            dag=dag_svg(shape["steps"], statuses),
            timeline=timeline_svg(bars),
            tasks_shown=TASKS_SHOWN,
        )

    def workers(request: Request) -> Response:
        now = datetime.now(timezone.utc)
        rows = d.client.worker_activity(since=now - WORKERS_SINCE)
        return d.render(
            request,
            "workers.html",
            page="workers",
            workers=[
                {"w": w, "live": _is_live(w.last_heartbeat_at, w.deprecated_at, now)} for w in rows
            ],
            live_after=LIVE_AFTER,
        )

    return [
        Route("/", overview, name="overview"),
        Route("/flows", flows, name="flows"),
        Route("/flows/{slug}", flow, name="flow"),
        Route("/runs", runs, name="runs"),
        Route("/runs/{run_id}", run, name="run"),
        Route("/workers", workers, name="workers"),
        Route("/events", partial(events, d), name="events"),
    ]


async def events(d: Dashboard, request: Request) -> Response:
    """Server-sent events of the live feed (only one run's with ``?run_id=``)."""
    only = request.query_params.get("run_id")
    queue = d.feed.subscribe()
    # Answer once the feed listens, so that the browser's re-read on open (which covers what
    # changed since its page was rendered) is followed by every later change.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(d.feed.listening.wait(), LISTEN_WAIT)

    async def stream() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield ": keepalive\n\n"
                    continue
                if only and event.kind != "lagged" and event.run_id != only:
                    continue
                yield event.sse()
        finally:
            d.feed.unsubscribe(queue)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _is_live(heartbeat: datetime, deprecated: datetime | None, now: datetime) -> bool:
    return deprecated is None and (now - heartbeat).total_seconds() <= LIVE_AFTER


def _step_order(shape: FlowShape, slug: str) -> int:
    for i, step in enumerate(shape["steps"]):
        if step["slug"] == slug:
            return i
    return len(shape["steps"])


def _run_id(text: str) -> UUID:
    try:
        return UUID(text.strip())
    except ValueError:
        raise ConfigurationError(f"not a run id (a UUID): {text!r}") from None


def _when(text: str | None, name: str) -> datetime | None:
    """A time from a filter field (``datetime-local`` gives no zone: read as UTC)."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"{name}: not a date and time: {text!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)
