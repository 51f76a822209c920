"""``pgflow-kombu schedules``: the cron schedules in the database."""

from __future__ import annotations

import click

from pgflow_kombu import cli_output as out
from pgflow_kombu.cli_base import client_for
from pgflow_kombu.cli_globals import json_option

__all__ = ["schedules"]


@click.group()
def schedules() -> None:
    """Cron schedules in the database (workers fire them; see 'worker --no-scheduler')."""


@schedules.command("list")
@click.option("--flow", "flow_slug", help="Only schedules of this flow.")
@json_option
@click.pass_context
def schedules_list(ctx: click.Context, flow_slug: str | None, as_json: bool) -> None:
    """Every schedule with its status (active, paused, removed) and next tick."""
    out.listing(
        [
            {**s.model_dump(mode="json"), "status": s.status}
            for s in client_for(ctx).list_schedules(flow_slug=flow_slug)
        ],
        as_json,
        ["schedule", "flow", "cron", "timezone", "status", "next tick", "last tick"],
        lambda s: (
            s["name"],
            s["flow_slug"],
            s["cron"],
            s["timezone"],
            s["status"],
            s["next_tick_at"] if s["status"] == "active" else "-",
            s["last_tick_at"] or "-",
        ),
    )


@schedules.command("pause")
@click.argument("name")
@click.pass_context
def schedules_pause(ctx: click.Context, name: str) -> None:
    """Stop starting NAME's ticks (exit 5 when there is no such schedule)."""
    client_for(ctx).pause_schedule(name)
    click.echo(f"paused {name}")


@schedules.command("resume")
@click.argument("name")
@click.pass_context
def schedules_resume(ctx: click.Context, name: str) -> None:
    """Start NAME's ticks again from its next tick (ticks in the pause are not caught up)."""
    schedule = client_for(ctx).resume_schedule(name)
    click.echo(f"resumed {name}: next tick {out.when(schedule.next_tick_at)}")


@schedules.command("trigger")
@click.argument("name")
@json_option
@click.pass_context
def schedules_trigger(ctx: click.Context, name: str, as_json: bool) -> None:
    """Start a run of NAME now (paused or not); prints its run id."""
    run_id = client_for(ctx).trigger_schedule(name)
    out.emit_json({"run_id": str(run_id)}) if as_json else click.echo(str(run_id))


@schedules.command("delete")
@click.argument("name")
@click.pass_context
def schedules_delete(ctx: click.Context, name: str) -> None:
    """Delete NAME and its tick history (a worker whose code defines it writes it again)."""
    client_for(ctx).delete_schedule(name)
    click.echo(f"deleted {name}")
