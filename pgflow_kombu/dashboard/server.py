"""Serving the dashboard with uvicorn (``pgflow-kombu dashboard``)."""

from __future__ import annotations

import click
from starlette.applications import Starlette
from starlette.routing import Mount

from pgflow_kombu.dashboard.app import create_app
from pgflow_kombu.errors import ConfigurationError

__all__ = ["build", "serve"]


def build(url: str, *, read_only: bool = False, base_path: str = "") -> Starlette:
    """The app to serve: the dashboard, mounted under ``base_path`` when one is given."""
    app = create_app(url, read_only=read_only)
    path = base_path.rstrip("/")
    if not path:
        return app
    if not path.startswith("/"):
        raise ConfigurationError(f"--base-path must start with '/', got {base_path!r}")
    dashboard = app.state.dashboard

    async def lifespan_close(_: Starlette):  # type: ignore[no-untyped-def]
        yield
        await dashboard.close()

    from contextlib import asynccontextmanager

    return Starlette(routes=[Mount(path, app=app)], lifespan=asynccontextmanager(lifespan_close))


def serve(url: str, *, host: str, port: int, read_only: bool = False, base_path: str = "") -> None:
    import uvicorn

    app = build(url, read_only=read_only, base_path=base_path)
    where = f"http://{host}:{port}{base_path.rstrip('/')}/"
    click.echo(f"pgflow-kombu dashboard on {where}{' (read-only)' if read_only else ''}", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
