"""``create_app``: the dashboard as an ASGI app (Starlette), served by ``pgflow-kombu dashboard``
or mounted by a host application under a path prefix."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pgflow_kombu.client import Client
from pgflow_kombu.dashboard import actions, formatting, pages
from pgflow_kombu.dashboard.live import Feed
from pgflow_kombu.dashboard.paths import template_path_for
from pgflow_kombu.dashboard.security import (
    CSRF_COOKIE,
    AuthCheck,
    Guard,
    basic_auth_from_env,
    csrf_token,
)
from pgflow_kombu.errors import ConfigurationError, FlowNotFound, PgFlowError, RunNotFound

__all__ = ["Dashboard", "create_app"]

HERE = Path(__file__).parent

# Every page: its own assets only (nothing from elsewhere, no inline script) and no framing, so
# another site cannot overlay the action buttons.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}

# Control actions appear when the client declares the run control API (Client.run_control).
CONTROL_ACTIONS = ("retry", "delete", "cancel")


class Dashboard:
    """What the routes share: the client, the live feed, templates, the CSRF secret, the mode."""

    def __init__(
        self, client: Client, *, read_only: bool, secret: bytes, owns_client: bool = True
    ) -> None:
        self.client = client
        self.owns_client = owns_client
        self.read_only = read_only
        self.secret = secret
        self.feed = Feed(client.url)
        self.actions = {name: not read_only and client.run_control for name in CONTROL_ACTIONS}
        self.actions["start"] = not read_only
        env = Environment(
            loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape()
        )
        env.filters["json"] = formatting.pretty_json
        env.filters["duration"] = formatting.duration
        env.filters["ago"] = formatting.ago
        env.filters["seconds"] = formatting.seconds
        env.filters["capped"] = formatting.capped
        env.globals["url_for"] = template_path_for  # kept: Jinja2Templates only sets a default
        self.templates = Jinja2Templates(env=env)

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response:
        token = csrf_token(self.secret, request)
        response = self.templates.TemplateResponse(
            request,
            template,
            {"csrf": token, "read_only": self.read_only, "actions": self.actions, **context},
            status_code=status_code,
        )
        response.headers.update(SECURITY_HEADERS)
        if request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(
                CSRF_COOKIE, token, httponly=True, samesite="strict", path=_cookie_path(request)
            )
        return response

    async def close(self) -> None:
        await self.feed.close()
        if self.owns_client:
            await asyncio.to_thread(self.client.close)


def _cookie_path(request: Request) -> str:
    return request.scope.get("root_path", "") or "/"


def create_app(
    url: str,
    *,
    read_only: bool = False,
    auth: AuthCheck | None = None,
    basic_auth: tuple[str, str] | bool | None = True,
    secret: bytes | None = None,
    metrics: bool = True,
    client: Client | None = None,
) -> Starlette:
    """The dashboard of the database at ``url`` as an ASGI app.

    * ``read_only``: every action (start, retry, delete, cancel) is refused (403) and not shown.
    * ``auth``: the host application's check, called with each request; return (or await) True
      to let it in, False to answer 403. E.g. ``auth=lambda request: request.user.is_staff``.
    * ``basic_auth``: a ``(user, password)`` pair; True (the default) reads them from
      ``PGFLOW_DASHBOARD_USER`` / ``PGFLOW_DASHBOARD_PASSWORD`` when both are set; None or
      False turns it off.
    * ``secret``: signs the CSRF tokens (random per process by default: tokens then last as
      long as the process; give one shared by every process behind a load balancer).
    * ``client``: a :class:`~pgflow_kombu.client.Client` to read through (the app then leaves
      closing it to the caller); by default the app makes its own.
    * ``metrics``: serve the database figures in Prometheus's format on ``/metrics`` (needs
      ``prometheus-client``, in the ``[dashboard]`` extra).

    Mount it in a host app with ``Mount("/pgflow", app=create_app(url))``. A mounted app's
    lifespan is not run by Starlette: call ``await app.state.dashboard.close()`` at shutdown
    to close its connections (they are also closed when the process ends).
    """
    dashboard = Dashboard(
        client if client is not None else Client(url),
        read_only=read_only,
        secret=secret if secret is not None else secrets.token_bytes(32),
        owns_client=client is None,
    )
    routes: list[Route | Mount] = [
        *pages.routes(dashboard),
        *actions.routes(dashboard),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    if metrics:
        from pgflow_kombu.observability.metrics import database_registry, make_asgi_app

        routes.append(Mount("/metrics", app=make_asgi_app(database_registry(dashboard.client.url))))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await dashboard.close()

    async def not_found(request: Request, exc: Exception) -> Response:
        return dashboard.render(request, "error.html", 404, message=str(exc))

    async def bad_request(request: Request, exc: Exception) -> Response:
        return dashboard.render(request, "error.html", 400, message=str(exc))

    async def unavailable(request: Request, exc: Exception) -> Response:
        # The database is unreachable or refused: say so rather than a bare 500.
        return dashboard.render(request, "error.html", 503, message=str(exc))

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            RunNotFound: not_found,
            FlowNotFound: not_found,
            ConfigurationError: bad_request,
            PgFlowError: unavailable,
        },
    )
    app.state.dashboard = dashboard
    if basic_auth is True:
        basic_auth = basic_auth_from_env()
    app.add_middleware(Guard, basic_auth=basic_auth or None, auth=auth)
    return app
