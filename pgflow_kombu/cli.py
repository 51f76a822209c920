"""The ``pgflow-kombu`` command: thin click commands over the library.

The root group and the commands about workers live here; the command groups in
``cli_db``, ``cli_flows``, ``cli_runs`` and ``cli_schedules``, what they share in ``cli_base``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from pgflow_kombu import cli_output as out
from pgflow_kombu.cli_base import (
    ERROR_EXIT_CODES,
    EXIT_NOT_FOUND,
    EXIT_RUN_FAILED,
    EXIT_TIMEOUT,
    URL_ENV,
    app_database_url,
    client_for,
    database_url,
    load_app,
    resolve_database_url,
)
from pgflow_kombu.cli_db import db
from pgflow_kombu.cli_flows import flows
from pgflow_kombu.cli_globals import Cli, global_app_required, json_option, remember_globals
from pgflow_kombu.cli_runs import Moment, runs
from pgflow_kombu.cli_schedules import schedules
from pgflow_kombu.client.base import CORE_VERSION
from pgflow_kombu.db import migrations
from pgflow_kombu.errors import PgFlowError
from pgflow_kombu.worker.command import worker_options
from pgflow_kombu.worker.logs import configure_logging, say

__all__ = [
    "ERROR_EXIT_CODES",
    "EXIT_NOT_FOUND",
    "EXIT_RUN_FAILED",
    "EXIT_TIMEOUT",
    "URL_ENV",
    "Moment",
    "app_database_url",
    "cli",
    "client_for",
    "database_url",
    "load_app",
    "main",
    "resolve_database_url",
]


@click.group(
    cls=Cli,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "PGFLOW"},
)
@click.version_option(
    package_name="pgflow-kombu",
    prog_name="pgflow-kombu",
    message=f"%(prog)s %(version)s (pgflow core {CORE_VERSION})",
)
@click.option(
    "--database-url",
    envvar=URL_ENV,
    metavar="URL",
    help=(
        f"PostgreSQL URL [env {URL_ENV}; default: the URL the -A app was created with, "
        "else an embedded server in ./.pgdata]. Also accepted after the subcommand."
    ),
)
@click.option(
    "-A",
    "--app",
    "app_spec",
    default=None,
    metavar="MODULE:ATTR",
    help="The app, for the subcommands that take one (worker, flows upsert).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Machine-readable output, for the commands that print data.",
)
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, app_spec: str | None, as_json: bool) -> None:
    """Background jobs and DAG workflows on PostgreSQL (pgflow 0.8.1 compatible).

    Shell completion: eval "$(_PGFLOW_KOMBU_COMPLETE=bash_source pgflow-kombu)" in ~/.bashrc
    (zsh_source, fish_source for the other shells)."""
    ctx.ensure_object(dict)
    ctx.obj["database_url"] = database_url
    remember_globals(ctx, app_spec, as_json)


for _group in (db, flows, runs, schedules):
    cli.add_command(_group)


@cli.group()
def workers() -> None:
    """Workers registered in the database."""


@workers.command("list")
@click.option("--all", "include_stale", is_flag=True, help="Include stopped and stale workers.")
@json_option
@click.pass_context
def workers_list(ctx: click.Context, include_stale: bool, as_json: bool) -> None:
    """Workers with a recent heartbeat (or all with --all)."""
    out.listing(
        client_for(ctx).list_workers(include_stale=include_stale),
        as_json,
        ["worker", "queue", "function", "last heartbeat", "deprecated"],
        lambda w: (
            w.worker_id,
            w.queue_name,
            w.function_name,
            out.when(w.last_heartbeat_at),
            out.when(w.deprecated_at),
        ),
    )


@cli.command()
@json_option
@click.pass_context
def health(ctx: click.Context, as_json: bool) -> None:
    """Check the database and the schema; exit 1 when unreachable."""
    report = client_for(ctx).health_check()
    if as_json:
        out.emit_json(report)
    else:
        for key, value in report.items():
            click.echo(f"{key:<16} {value}")


@cli.command()
@click.option("--timeout", type=float, default=60.0, show_default=True)
@click.pass_context
def demo(ctx: click.Context, timeout: float) -> None:
    """Run the order-processing example flow end to end through a worker."""
    from pgflow_kombu import demo as demo_module

    url = database_url(ctx)
    migrations.upgrade(url)
    sys.exit(demo_module.run(url, timeout=timeout))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8900, show_default=True)
@click.option(
    "--read-only", is_flag=True, help="Refuse every action (start, retry, delete, cancel)."
)
@click.option(
    "--base-path",
    default="",
    metavar="PATH",
    help="Serve under this path prefix (e.g. /pgflow, behind a reverse proxy).",
)
@click.pass_context
def dashboard(ctx: click.Context, host: str, port: int, read_only: bool, base_path: str) -> None:
    """Serve the web dashboard (basic auth when PGFLOW_DASHBOARD_USER and
    PGFLOW_DASHBOARD_PASSWORD are set)."""
    from pgflow_kombu.dashboard.server import serve

    url = database_url(ctx)
    # A monitoring tool leaves the schema alone (as the worker does): say what to run instead.
    pending = migrations.pending(url)
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise PgFlowError(
            f"the database schema is not up to date (pending: {names}): "
            "run 'pgflow-kombu db upgrade' first"
        )
    serve(url, host=host, port=port, read_only=read_only, base_path=base_path)


@cli.command("worker")
@worker_options(app_callback=global_app_required)
@click.pass_context
def worker(ctx: click.Context, /, **options: Any) -> None:
    """Run a worker executing the app's flows (SIGTERM/Ctrl-C stop it gracefully)."""
    from pgflow_kombu.worker.command import run_command, worker_settings
    from pgflow_kombu.worker.loading import load_target

    settings = worker_settings(options)  # a bad setting is a usage error (exit 2)
    # Before anything is said, so that with --log-format json every line on stderr is JSON.
    configure_logging(options["loglevel"], options["log_format"])
    try:
        app_target = (
            None if ctx.find_root().obj.get("database_url") else load_target(options["app_ref"])
        )
        url = database_url(ctx, app_target=app_target)
    except PgFlowError as exc:
        say(f"error: {exc}", event="worker_startup_failed", level=logging.ERROR)
        sys.exit(next((code for kinds, code in ERROR_EXIT_CODES if isinstance(exc, kinds)), 1))
    sys.exit(run_command(url, settings, **options))


def main() -> None:
    """Entry point: library errors become one line on stderr and exit code 1."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except PgFlowError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(next((code for kinds, code in ERROR_EXIT_CODES if isinstance(exc, kinds)), 1))
