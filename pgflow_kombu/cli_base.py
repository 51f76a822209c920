"""What the ``pgflow-kombu`` commands share: the database URL, the ``-A`` app, a client, and the
exit codes library errors map to."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from pgflow_kombu.db import embedded
from pgflow_kombu.db.urls import redact
from pgflow_kombu.errors import (
    ConfigurationError,
    FlowNotFound,
    PgFlowError,
    RunFailed,
    RunNotFound,
    RunTimeout,
    ScheduleNotFound,
)
from pgflow_kombu.worker.logs import say

if TYPE_CHECKING:
    from pgflow_kombu.app import PgFlow
    from pgflow_kombu.client import Client

__all__ = [
    "ERROR_EXIT_CODES",
    "EXIT_NOT_FOUND",
    "EXIT_RUN_FAILED",
    "EXIT_TIMEOUT",
    "SECONDS",
    "URL_ENV",
    "app_database_url",
    "client_for",
    "database_url",
    "load_app",
    "resolve_database_url",
]


URL_ENV = "PGFLOW_DATABASE_URL"

# Exit codes: 0 success, 1 error, 2 usage (click), and for runs:
EXIT_RUN_FAILED = 3
EXIT_TIMEOUT = 4
EXIT_NOT_FOUND = 5

SECONDS = click.FloatRange(min=0)
"""A wait in seconds (click refuses a negative one before anything is done)."""

# The exit code of a library error, by its class (first match; any other error exits 1).
ERROR_EXIT_CODES: tuple[tuple[type[PgFlowError] | tuple[type[PgFlowError], ...], int], ...] = (
    (RunFailed, EXIT_RUN_FAILED),
    (RunTimeout, EXIT_TIMEOUT),
    ((RunNotFound, FlowNotFound, ScheduleNotFound), EXIT_NOT_FOUND),
)


def resolve_database_url(url: str | None) -> str:
    """The configured URL, or the shared embedded server's (announced on stderr).

    The URL is exported to the environment so application code loaded by this command (``-A``)
    finds the same database with a plain ``PgFlow()``.
    """
    if not url:
        url = embedded.database_url(announce=False)
        say(
            f"pgflow-kombu: no {URL_ENV} set; using the embedded PostgreSQL in "
            f"{embedded.data_dir()}",
            event="embedded_database",
            fields={"directory": str(embedded.data_dir())},
        )
    os.environ[URL_ENV] = url
    return url


def database_url(ctx: click.Context, *, app_target: Any = None) -> str:
    """``--database-url`` / ``PGFLOW_DATABASE_URL``; else the URL the ``-A`` app was created
    with (``app_target``, already loaded); else the embedded server's."""
    root = ctx.find_root()
    if "resolved_url" not in root.obj:
        url = root.obj.get("database_url")
        if not url and app_target is not None:
            url = app_database_url(app_target)
        root.obj["resolved_url"] = resolve_database_url(url)
    resolved: str = root.obj["resolved_url"]
    return resolved


def app_database_url(target: Any) -> str | None:
    """The URL an app was created with (``PgFlow("postgresql://...")``), for an app or for flows
    and tasks registered with one; None when it has none (it then reads the environment)."""
    from pgflow_kombu.app import PgFlow
    from pgflow_kombu.worker.loading import flows_of

    if isinstance(target, PgFlow):
        return target.settings.database_url
    urls = {
        dispatcher.settings.database_url
        for flow in flows_of(target).values()
        if isinstance(dispatcher := flow.dispatcher, PgFlow) and dispatcher.settings.database_url
    }
    if len(urls) > 1:
        listed = ", ".join(sorted(redact(url) for url in urls))
        raise ConfigurationError(
            f"the flows given with -A belong to apps on different databases ({listed}): "
            f"pass --database-url or set {URL_ENV}"
        )
    return urls.pop() if urls else None


def load_app(spec: str) -> PgFlow:
    """Import ``pkg.module:attr`` (``attr`` defaults to ``app``) and return the PgFlow there."""
    from pgflow_kombu.app import PgFlow
    from pgflow_kombu.worker.loading import import_app_module

    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    module = import_app_module(spec, module_name)
    app = getattr(module, attr or "app", None)
    if not isinstance(app, PgFlow):
        raise ConfigurationError(
            f"-A {spec}: {module_name}.{attr or 'app'} is not a PgFlow app (got {type(app).__name__})"
        )
    return app


def client_for(ctx: click.Context) -> Client:
    from pgflow_kombu.client import Client

    root = ctx.find_root()
    if "client" not in root.obj:
        root.obj["client"] = Client(database_url(ctx))
        ctx.call_on_close(root.obj["client"].close)
    client: Client = root.obj["client"]
    return client
