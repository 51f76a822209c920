"""The actions (POST): start a run, and retry, cancel or delete one once the client offers
run control. Each checks the CSRF token first and is refused in read-only mode."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pgflow_kombu.dashboard.paths import path_for
from pgflow_kombu.dashboard.security import CSRF_FIELD, check_csrf
from pgflow_kombu.dashboard.svg import dag_svg
from pgflow_kombu.errors import PgFlowError

if TYPE_CHECKING:
    from pgflow_kombu.dashboard.app import Dashboard

__all__ = ["parse_input", "routes"]


class InputError(ValueError):
    pass


def parse_input(text: str) -> Any:
    """The run input typed in the form, as JSON (NaN and Infinity refused: jsonb has none)."""

    def refuse(constant: str) -> Any:
        raise InputError(f"{constant} is not JSON")

    if not text.strip():
        return None
    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise InputError(f"the input is not JSON: {exc}") from None


def routes(d: Dashboard) -> list[Route]:
    async def guarded(request: Request, action: str) -> tuple[dict[str, Any], Response | None]:
        form = dict(await request.form())
        submitted = form.get(CSRF_FIELD)
        if not check_csrf(d.secret, request, submitted if isinstance(submitted, str) else None):
            return form, d.render(
                request, "error.html", 403, message="refused: missing or invalid CSRF token"
            )
        if not d.actions.get(action):
            why = "the dashboard is read-only" if d.read_only else f"{action} is not available"
            return form, d.render(request, "error.html", 403, message=f"refused: {why}")
        return form, None

    async def start(request: Request) -> Response:
        form, refused = await guarded(request, "start")
        if refused is not None:
            return refused
        slug = request.path_params["slug"]
        text = str(form.get("input", ""))
        try:
            data = parse_input(text)
            run_id = await run_in_threadpool(d.client.start_flow, slug, data)
        except (InputError, PgFlowError) as exc:
            shape = await run_in_threadpool(d.client.get_flow_shape, slug)
            return d.render(
                request,
                "flow.html",
                400,
                page="flows",
                shape=shape,
                dag=dag_svg(shape["steps"]),
                counts=None,
                durations=[],
                recent=[],
                input_text=text,
                input_error=str(exc),
            )
        return RedirectResponse(path_for(request, "run", run_id=str(run_id)), status_code=303)

    def control(action: str) -> Any:
        async def endpoint(request: Request) -> Response:
            _, refused = await guarded(request, action)
            if refused is not None:
                return refused
            run_id = request.path_params["run_id"]
            client = d.client
            method: Callable[[str], object] = {
                "retry": client.retry_run,
                "delete": client.delete_run,
                "cancel": client.cancel_run,
            }[action]
            try:
                result = await run_in_threadpool(method, run_id)
            except PgFlowError as exc:
                return d.render(request, "error.html", 409, message=f"{action}: {exc}")
            if result is False:  # cancel_run: the run had finished meanwhile
                return d.render(
                    request, "error.html", 409, message=f"{action}: run {run_id} had finished"
                )
            target = "runs" if action == "delete" else "run"
            params = {} if action == "delete" else {"run_id": run_id}
            return RedirectResponse(path_for(request, target, **params), status_code=303)

        return endpoint

    return [
        Route("/flows/{slug}/start", start, methods=["POST"], name="start_run"),
        *(
            Route(f"/runs/{{run_id}}/{action}", control(action), methods=["POST"], name=action)
            for action in ("retry", "cancel", "delete")
        ),
    ]
