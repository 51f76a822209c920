"""The ``pgflow-kombu`` command: thin click commands over the library."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from pgflow_kombu import cli_output as out
from pgflow_kombu.cli_globals import (
    Cli,
    app_option,
    global_app_required,
    json_option,
    remember_globals,
)
from pgflow_kombu.client.base import CORE_VERSION
from pgflow_kombu.db import embedded, migrations
from pgflow_kombu.errors import (
    ConfigurationError,
    FlowInputError,
    FlowNotFound,
    PgFlowError,
    RunFailed,
    RunNotFound,
    RunTimeout,
    ScheduleNotFound,
)
from pgflow_kombu.flows.dispatch import MAX_DELAY
from pgflow_kombu.flows.options import FLOW_OPTION_NAMES
from pgflow_kombu.worker.command import worker_options
from pgflow_kombu.worker.logs import configure_logging, say

if TYPE_CHECKING:
    from pgflow_kombu.app import PgFlow
    from pgflow_kombu.client import Client

__all__ = [
    "ERROR_EXIT_CODES",
    "EXIT_NOT_FOUND",
    "EXIT_RUN_FAILED",
    "EXIT_TIMEOUT",
    "URL_ENV",
    "Moment",
    "app_database_url",
    "cli",
    "main",
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
        raise ConfigurationError(
            "the flows given with -A belong to apps on different databases: "
            f"pass --database-url or set {URL_ENV}"
        )
    return urls.pop() if urls else None


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


@db.command("embedded-stop")
def db_embedded_stop() -> None:
    """Stop the embedded PostgreSQL server of ./.pgdata (or PGFLOW_EMBEDDED_DIR)."""
    stopped = embedded.stop()
    click.echo("stopped" if stopped else "no embedded server running")


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


@cli.group()
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
    """(Re)compile a flow from the app's code or a JSON file. Destructive: deletes its runs."""
    from pgflow_kombu.app import PgFlow

    if shape_file is not None:
        steps, options = _shape_from_file(shape_file)
    elif app_spec:
        app = load_app(app_spec)
        database_url(ctx, app_target=app)
        shape = app.get_flow(slug).shape()
        steps, options = shape["steps"], shape["options"]
    else:
        raise click.UsageError("give -A MODULE:APP or --file SHAPE.json")
    result = PgFlow(database_url(ctx)).upsert_flow(slug, steps=steps, **options)
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
    if not isinstance(options, dict) or not set(options) <= set(FLOW_OPTION_NAMES):
        raise click.BadParameter(
            f'{name}: "options" must be an object with keys among '
            f"{', '.join(FLOW_OPTION_NAMES)}, got {options!r}",
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


@cli.group()
def runs() -> None:
    """Start, inspect and wait for runs."""


@runs.command("start")
@click.argument("slug")
@click.argument("input_json", required=False, default="null")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the run to finish.")
@click.option("--timeout", type=SECONDS, default=60.0, show_default=True)
@click.option(
    "--delay",
    type=click.FloatRange(min=0, max=MAX_DELAY),
    default=None,
    help="Seconds before its tasks are visible.",
)
@click.option(
    "--idempotency-key",
    default=None,
    help="A start with a key already used for SLUG prints that run instead of starting one.",
)
@json_option
@click.pass_context
def runs_start(
    ctx: click.Context,
    slug: str,
    input_json: str,
    wait_: bool,
    timeout: float,
    delay: float | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Start a run of SLUG with INPUT_JSON (exit 3 failed, 4 timed out when waiting)."""
    payload = _json_argument(input_json, "INPUT_JSON")
    client = client_for(ctx)
    run_id = client.start_flow(slug, payload, delay_seconds=delay, idempotency_key=idempotency_key)
    if not wait_:
        out.emit_json({"run_id": str(run_id)}) if as_json else click.echo(str(run_id))
        return
    _wait_and_report(client, str(run_id), timeout, as_json)


def _json_argument(text: str, param_hint: str) -> Any:
    """Parse a JSON argument as PostgreSQL's jsonb would accept it (no NaN, Infinity, NUL)."""
    from pgflow_kombu.client import run_input

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not a JSON value (jsonb refuses it)")

    try:
        return run_input(json.loads(text, parse_constant=refuse))
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=param_hint) from None
    except FlowInputError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None


@runs.command("show")
@click.argument("run_id")
@json_option
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """A run with its steps and tasks."""
    out.emit_run(client_for(ctx).get_run_with_states(run_id), as_json)


class Moment(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic from click 8.3
    """A point in time: ISO 8601 (UTC when no offset is given), or an age such as 30m, 2h, 7d."""

    name = "moment"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        from pgflow_kombu.durations import parse_duration

        text = str(value).strip()
        if text[-1:].lower() in ("s", "m", "h", "d", "w") and text[:1].isdigit():
            try:
                return datetime.now(timezone.utc) - parse_duration(text)
            except ConfigurationError:
                pass
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{text!r} is neither an ISO 8601 time nor an age like 30m, 2h, 7d", param)
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@runs.command("list")
@click.option("--flow", "flow_slug", help="Only runs of this flow.")
@click.option("--status", type=click.Choice(["started", "completed", "failed", "cancelled"]))
@click.option("--since", type=Moment(), help="Started at or after (ISO time, or an age: 7d).")
@click.option("--until", type=Moment(), help="Started before (ISO time, or an age: 1h).")
@click.option(
    "--input-contains",
    "input_json",
    help="Input contains this JSON (jsonb @>), e.g. '{\"user\": 7}'.",
)
@click.option("--after", help="The cursor printed after the previous page.")
@click.option("--limit", type=click.IntRange(min=0, max=1000), default=20, show_default=True)
@json_option
@click.pass_context
def runs_list(
    ctx: click.Context,
    flow_slug: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
    input_json: str | None,
    after: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Runs, newest first, a page at a time: the next page's cursor is printed after the table
    (on stderr with --json), pass it to --after."""
    contains = None if input_json is None else _json_argument(input_json, "--input-contains")
    page = client_for(ctx).find_runs(
        flow_slug=flow_slug,
        status=status,
        since=since,
        until=until,
        input_contains=contains,
        after=after,
        limit=limit,
    )
    out.listing(
        page.runs,
        as_json,
        ["run", "flow", "status", "started", "remaining"],
        lambda r: (r.run_id, r.flow_slug, r.status, out.when(r.started_at), r.remaining_steps),
    )
    if page.next is not None:
        click.echo(f"next: {page.next}", err=as_json)


@runs.command("count")
@click.option("--flow", "flow_slug", help="Only runs of this flow.")
@click.option("--since", type=Moment(), help="Started at or after (ISO time, or an age: 7d).")
@click.option("--until", type=Moment(), help="Started before (ISO time, or an age: 1h).")
@json_option
@click.pass_context
def runs_count(
    ctx: click.Context,
    flow_slug: str | None,
    since: datetime | None,
    until: datetime | None,
    as_json: bool,
) -> None:
    """Runs per status."""
    counts = client_for(ctx).count_runs(flow_slug=flow_slug, since=since, until=until)
    if as_json:
        out.emit_json(counts)
    else:
        out.table(["status", "runs"], list(counts.items()))


@runs.command("wait")
@click.argument("run_id")
@click.option("--timeout", type=SECONDS, default=60.0, show_default=True)
@json_option
@click.pass_context
def runs_wait(ctx: click.Context, run_id: str, timeout: float, as_json: bool) -> None:
    """Wait for a run, with live progress on a terminal (exit 3 failed, 4 timed out)."""
    _wait_and_report(client_for(ctx), run_id, timeout, as_json)


def _wait_and_report(client: Client, run_id: str, timeout: float, as_json: bool) -> None:
    """Wait for the run, showing progress on stderr (see :class:`cli_output.Progress`); a
    timeout names the ``--timeout`` given and how to keep waiting."""
    progress = out.Progress()
    deadline = time.monotonic() + timeout
    try:
        while True:
            run = client.get_run_with_states(run_id)
            progress.update(run)
            if run.finished:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunTimeout(
                    f"run {run.run_id} of flow {run.flow_slug!r} did not finish within "
                    f"{timeout:g} s (it goes on: keep waiting with "
                    f"'pgflow-kombu runs wait {run.run_id}')",
                    run_id=run.run_id,
                )
            # Woken by NOTIFY when it finishes; else back to redraw the progress.
            with contextlib.suppress(RunTimeout):
                client.wait(
                    run_id, timeout=min(remaining, progress.interval), raise_on_failure=False
                )
    finally:
        progress.done()
    out.emit_run(run, as_json)
    if run.status in ("failed", "cancelled"):
        sys.exit(EXIT_RUN_FAILED)


@runs.command("cancel")
@click.argument("run_id")
@click.option("--reason", help="Why (kept with the run, shown in its error).")
@click.pass_context
def runs_cancel(ctx: click.Context, run_id: str, reason: str | None) -> None:
    """Cancel a started run: no further task starts, running handlers see ctx.cancelled."""
    if client_for(ctx).cancel_run(run_id, reason=reason):
        click.echo(f"cancelled {run_id}")
    else:
        click.echo(f"run {run_id} had already finished: nothing to cancel")


@runs.command("retry")
@click.argument("run_id")
@click.pass_context
def runs_retry(ctx: click.Context, run_id: str) -> None:
    """Retry a failed or cancelled run from where it stopped (completed steps are kept)."""
    queued = client_for(ctx).retry_run(run_id)
    click.echo(f"retrying {run_id}: {queued} task(s) queued again")


@runs.command("delete")
@click.argument("run_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def runs_delete(ctx: click.Context, run_id: str, yes: bool) -> None:
    """Delete a run with its steps, tasks and queue messages."""
    if not yes:
        click.confirm(f"delete run {run_id}?", abort=True)
    client_for(ctx).delete_run(run_id)
    click.echo(f"deleted {run_id}")


@runs.command("prune")
@click.option(
    "--older-than",
    required=True,
    metavar="AGE",
    help="Delete runs finished longer ago than this (7d, 12h, 30m), and archived messages.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True)
@json_option
@click.pass_context
def runs_prune(ctx: click.Context, older_than: str, batch_size: int, as_json: bool) -> None:
    """Delete finished runs (and queue archive messages) older than AGE, in small batches."""
    from pgflow_kombu.durations import parse_duration

    try:
        age = parse_duration(older_than)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    result = client_for(ctx).prune(older_than=age, batch_size=batch_size)
    if as_json:
        out.emit_json(result.model_dump())
    else:
        click.echo(f"pruned {result.runs} run(s), {result.archived_messages} archived message(s)")


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


@cli.group()
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
    from pgflow_kombu.worker.command import run_command
    from pgflow_kombu.worker.loading import load_target

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
    sys.exit(run_command(url, **options))


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
