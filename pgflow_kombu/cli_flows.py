"""``pgflow-kombu flows``: flow definitions in the database."""

from __future__ import annotations

import json
from typing import Any

import click

from pgflow_kombu import cli_output as out
from pgflow_kombu.cli_base import client_for, database_url, load_app
from pgflow_kombu.cli_globals import app_option, json_option
from pgflow_kombu.flows.keywords import FlowDataKeywords

__all__ = ["flows"]


@click.group()
def flows() -> None:
    """Flow definitions in the database."""


@flows.command("list")
@json_option
@click.pass_context
def flows_list(ctx: click.Context, as_json: bool) -> None:
    """The flows the database holds."""
    out.listing(
        client_for(ctx).list_flows(),
        as_json,
        ["flow", "max_attempts", "base_delay", "timeout", "created"],
        lambda f: (
            f.flow_slug,
            f.opt_max_attempts,
            f.opt_base_delay,
            f.opt_timeout,
            out.when(f.created_at),
        ),
    )


@flows.command("show")
@click.argument("slug")
@json_option
@click.pass_context
def flows_show(ctx: click.Context, slug: str, as_json: bool) -> None:
    """One flow's steps, dependencies and options."""
    shape = client_for(ctx).get_flow_shape(slug)
    if as_json:
        out.emit_json(shape)
        return
    click.echo(f"flow {slug}  " + out.options_text(shape["options"]))
    out.table(
        ["#", "step", "type", "depends on", "options"],
        [
            (
                i,
                s["slug"],
                s["step_type"],
                ", ".join(s["deps"]),
                out.options_text(s["options"]),
            )
            for i, s in enumerate(shape["steps"])
        ],
    )


@flows.command("upsert")
@click.argument("slug")
@app_option
@click.option("--file", "shape_file", type=click.File(), help="A JSON flow shape instead of -A.")
@click.pass_context
def flows_upsert(ctx: click.Context, slug: str, app_spec: str | None, shape_file: Any) -> None:
    """(Re)compile a flow from the app's code or a JSON file. Destructive: deletes its runs.

    The flow's limits (max_concurrency, rate_limit, priority) are stored with it."""
    from pgflow_kombu.app import PgFlow
    from pgflow_kombu.client.flows import upsert_outcome

    if shape_file is not None:
        steps, options = _shape_from_file(shape_file)
        result = PgFlow(database_url(ctx)).upsert_flow(slug, steps=steps, **options)
    elif app_spec:
        app = load_app(app_spec)
        database_url(ctx, app_target=app)
        flow = app.get_flow(slug)  # the object, not its shape: the limits (a key function too)
        shape = flow.shape()
        before = client_for(ctx).replace_flow(shape, limits=flow.limit_rows())
        result = upsert_outcome(before, shape)
    else:
        raise click.UsageError("give -A MODULE:APP or --file SHAPE.json")
    click.echo(f"{slug}: {result['status']}")
    for difference in result["differences"]:
        click.echo(f"  changed: {difference}")


def _shape_from_file(shape_file: Any) -> tuple[list[Any], dict[str, Any]]:
    """The steps and flow options a ``--file`` holds; a usage error saying what is wrong."""
    name = getattr(shape_file, "name", "--file")
    try:
        shape = json.load(shape_file)
    except ValueError as exc:
        raise click.BadParameter(f"{name} is not JSON: {exc}", param_hint="--file") from None
    options = shape.get("options", {}) if isinstance(shape, dict) else None
    if not isinstance(shape, dict) or not isinstance(shape.get("steps"), list):
        raise click.BadParameter(
            f'{name} is not a flow shape: expected an object with "steps" (a list), as '
            "'pgflow-kombu flows show SLUG --json' prints",
            param_hint="--file",
        )
    known = sorted(FlowDataKeywords.__optional_keys__)
    if not isinstance(options, dict) or not set(options) <= set(known):
        raise click.BadParameter(
            f'{name}: "options" must be an object with keys among '
            f"{', '.join(known)}, got {options!r}",
            param_hint="--file",
        )
    return shape["steps"], options


@flows.command("delete")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def flows_delete(ctx: click.Context, slug: str, yes: bool) -> None:
    """Delete a flow with all its runs and its queue."""
    if not yes:
        click.confirm(f"delete flow {slug!r} with all its runs?", abort=True)
    client_for(ctx).delete_flow(slug)
    click.echo(f"deleted {slug}")
