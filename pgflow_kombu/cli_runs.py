"""``pgflow-kombu runs``: start, read, wait for, cancel, retry, delete and prune runs."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from pgflow_kombu import cli_output as out
from pgflow_kombu.cli_base import EXIT_RUN_FAILED, SECONDS, client_for
from pgflow_kombu.cli_globals import json_option
from pgflow_kombu.client.control import DEFAULT_PRUNE_BATCH
from pgflow_kombu.errors import ConfigurationError, FlowInputError, RunTimeout
from pgflow_kombu.flows.dispatch import MAX_DELAY

if TYPE_CHECKING:
    from pgflow_kombu.client import Client

__all__ = ["Moment", "runs"]


@click.group()
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
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise click.BadParameter(f"{shown!r} is not JSON: {exc}", param_hint=param_hint) from None
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
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=DEFAULT_PRUNE_BATCH, show_default=True
)
@json_option
@click.pass_context
def runs_prune(ctx: click.Context, older_than: str, batch_size: int, as_json: bool) -> None:
    """Delete finished runs (and queue archive messages) older than AGE, and idle rate
    buckets, in small batches."""
    from pgflow_kombu.durations import parse_duration

    try:
        age = parse_duration(older_than)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    result = client_for(ctx).prune(older_than=age, batch_size=batch_size)
    if as_json:
        out.emit_json(result.model_dump())
    else:
        click.echo(
            f"pruned {result.runs} run(s), {result.archived_messages} archived message(s), "
            f"{result.rate_buckets} idle rate bucket(s)"
        )
