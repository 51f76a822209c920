"""The ``pgflow-kombu`` command's global options, accepted where a Celery user puts them.

``--database-url`` may come after the subcommand (it is moved before it); ``-A`` and ``--json``
may come before it (``pgflow-kombu -A proj worker``, as ``celery -A proj worker``): the root
group keeps them and the subcommands' own options fall back to them.
"""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

__all__ = [
    "Cli",
    "app_option",
    "global_app_required",
    "global_fallback",
    "hoist_database_url",
    "json_option",
    "remember_globals",
]


class Cli(click.Group):
    """The root group: ``--database-url`` may come after the subcommand too
    (``pgflow-kombu runs list --database-url URL``), as ``-A`` and ``--json`` may come before
    it (``pgflow-kombu -A proj worker``, as ``celery -A proj worker``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_database_url(args))


def hoist_database_url(args: list[str]) -> list[str]:
    """``args`` with every ``--database-url URL`` / ``--database-url=URL`` moved to the front
    (up to a ``--``, after which everything is an argument)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg == "--database-url" and i + 1 < len(args):
            front.extend(args[i : i + 2])
            i += 2
            continue
        (front if arg.startswith("--database-url=") else rest).append(arg)
        i += 1
    return front + rest


def global_fallback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A subcommand's ``-A``/``--json``: its own when given on its command line, else the one
    given before the subcommand, else its own (environment, default)."""
    name = param.name or ""
    root = ctx.find_root()
    if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
        before = (root.obj or {}).get("global_" + name)
        if before is not None and before is not False:
            value = before
    return value


def global_app_required(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """:func:`global_fallback` for an ``-A`` the command cannot do without (the worker's)."""
    value = global_fallback(ctx, param, value)
    if value is None:
        raise click.MissingParameter(ctx=ctx, param=param)
    return value


app_option = click.option(
    "-A",
    "--app",
    "app_spec",
    envvar="PGFLOW_APP",
    metavar="MODULE:ATTR",
    callback=global_fallback,
    help="The application, e.g. myproject.jobs:app [env PGFLOW_APP]",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, callback=global_fallback, help="Machine-readable output."
)


def remember_globals(ctx: click.Context, app_spec: str | None, as_json: bool) -> None:
    """Keep the root's ``-A`` (when given on the command line) and ``--json`` for the
    subcommands (see :func:`global_fallback`)."""
    if ctx.get_parameter_source("app_spec") is ParameterSource.COMMANDLINE:
        ctx.obj["global_app_spec"] = ctx.obj["global_app_ref"] = app_spec
    if ctx.get_parameter_source("as_json") is ParameterSource.COMMANDLINE:
        ctx.obj["global_as_json"] = as_json
