"""The ``pgflow-kombu`` command: thin click commands over the library."""

from __future__ import annotations

import os
import sys

import click

from pgflow_kombu.db import embedded, migrations
from pgflow_kombu.errors import PgFlowError

URL_ENV = "PGFLOW_DATABASE_URL"


def resolve_database_url(url: str | None) -> str:
    """The configured URL, or the shared embedded server's (announced on stderr).

    The URL is exported to the environment so application code loaded by this command (``-A``)
    finds the same database with a plain ``PgFlow()``.
    """
    if not url:
        url = embedded.database_url()
    os.environ[URL_ENV] = url
    return url


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "PGFLOW"}
)
@click.option(
    "--database-url",
    envvar=URL_ENV,
    metavar="URL",
    help=f"PostgreSQL URL [env {URL_ENV}; default: an embedded server in ./.pgdata]",
)
@click.pass_context
def cli(ctx: click.Context, database_url: str | None) -> None:
    """Background jobs and DAG workflows on PostgreSQL (pgflow 0.8.1 compatible)."""
    ctx.ensure_object(dict)
    ctx.obj["database_url"] = database_url


def database_url(ctx: click.Context) -> str:
    root = ctx.find_root()
    if "resolved_url" not in root.obj:
        root.obj["resolved_url"] = resolve_database_url(root.obj.get("database_url"))
    url: str = root.obj["resolved_url"]
    return url


@cli.group()
def db() -> None:
    """Database schema: upgrade, status, the embedded server."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply pending migrations (safe to run concurrently and repeatedly)."""
    applied = migrations.upgrade(database_url(ctx))
    if applied:
        for migration in applied:
            click.echo(f"applied {migration.version:04d}_{migration.name}")
    else:
        click.echo("database is up to date")


@db.command("status")
@click.pass_context
def db_status(ctx: click.Context) -> None:
    """List migrations and whether they are applied; exit 1 when some are pending."""
    states = migrations.status(database_url(ctx))
    for state in states:
        when = state.applied_at.isoformat(timespec="seconds") if state.applied_at else "pending"
        how = f" ({state.how})" if state.how == "adopted" else ""
        click.echo(f"{state.version:04d}_{state.name:<32} {when}{how}")
    if any(s.pending for s in states):
        sys.exit(1)


@db.command("embedded-stop")
def db_embedded_stop() -> None:
    """Stop the embedded PostgreSQL server of ./.pgdata (or PGFLOW_EMBEDDED_DIR)."""
    stopped = embedded.stop()
    click.echo("stopped" if stopped else "no embedded server running")


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
        sys.exit(1)
