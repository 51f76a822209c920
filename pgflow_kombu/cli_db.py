"""``pgflow-kombu db``: the schema's migrations and the embedded server."""

from __future__ import annotations

import sys

import click

from pgflow_kombu import cli_output as out
from pgflow_kombu.cli_base import database_url
from pgflow_kombu.cli_globals import json_option
from pgflow_kombu.db import embedded, input_index, migrations

__all__ = ["db"]


@click.group()
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
@json_option
@click.pass_context
def db_status(ctx: click.Context, as_json: bool) -> None:
    """List migrations and whether they are applied; exit 1 when some are pending."""
    states = migrations.status(database_url(ctx))
    if as_json:
        out.emit_json(
            [
                {
                    "version": state.version,
                    "name": state.name,
                    "applied_at": state.applied_at,
                    "how": state.how,
                    "pending": state.pending,
                }
                for state in states
            ]
        )
    for state in [] if as_json else states:
        when = out.when(state.applied_at) or "pending"
        how = f" ({state.how})" if state.how == "adopted" else ""
        click.echo(f"{state.version:04d}_{state.name:<32} {when}{how}")
    if any(s.pending for s in states):
        sys.exit(1)


@db.command("input-index")
@click.option("--drop", is_flag=True, help="Drop the index instead of creating it.")
@click.pass_context
def db_input_index(ctx: click.Context, drop: bool) -> None:
    """Create (or --drop) the index that find_runs' input filter reads (off by default: it costs
    every job an entry per input path); CONCURRENTLY, running jobs go on."""
    changed = input_index.set_input_index(database_url(ctx), not drop)
    state = "dropped" if drop else "created"
    click.echo(f"input index {state}" if changed else f"input index already {state}")


@db.command("embedded-stop")
def db_embedded_stop() -> None:
    """Stop the embedded PostgreSQL server of ./.pgdata (or PGFLOW_EMBEDDED_DIR)."""
    stopped = embedded.stop()
    click.echo("stopped" if stopped else "no embedded server running")
