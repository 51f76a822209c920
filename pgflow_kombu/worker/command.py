"""``pgflow-kombu worker``: options (each also an environment variable), banner, exit codes.

The command in ``pgflow_kombu.cli`` applies :func:`worker_options`, turns the settings' options
into :class:`WorkerSettings` with :func:`worker_settings`, and calls :func:`run_command`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar, get_args

import click

from pgflow_kombu.db.urls import redact
from pgflow_kombu.errors import ConfigurationError, PgFlowError
from pgflow_kombu.settings import WORKER_ENV_PREFIX, PoolKind, WorkerSettings
from pgflow_kombu.worker.logs import LOG_FORMATS, configure_logging, say
from pgflow_kombu.worker.status import ExitCode
from pgflow_kombu.worker.worker import Worker

__all__ = ["default_text", "run_command", "setting_flag", "worker_options", "worker_settings"]

F = TypeVar("F", bound=Callable[..., Any])


def _opt(*names: str, env: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(*names, envvar=WORKER_ENV_PREFIX + env, show_envvar=True, **kwargs)


# Short forms of the settings' options (the long form is always --<field-name>).
SHORT_FLAGS = {"concurrency": "-c", "pool": "-P"}


_METAVARS = {"int": "N", "float": "SECONDS", "timedelta": "AGE"}


def _kind(name: str) -> str:
    """The name of a setting's type, without ``| None``."""
    annotation = WorkerSettings.model_fields[name].annotation
    kinds = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    return getattr(kinds[0], "__name__", "")


def setting_flag(name: str) -> str:
    """The command's option for the worker setting ``name``: ``--shutdown-timeout``."""
    return "--" + name.replace("_", "-")


def default_text(name: str) -> str:
    """A setting's default as help and docs show it."""
    default = WorkerSettings.model_fields[name].default
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def _setting_option(name: str) -> Callable[[F], F]:
    """An option of the worker setting ``name``: it reads a string (or a switch) and leaves
    checks, and the ``PGFLOW_WORKER_*`` environment, to :class:`WorkerSettings` (see
    :func:`worker_settings`), so the command, ``Worker`` and the environment agree."""
    field = WorkerSettings.model_fields[name]
    flag = setting_flag(name)
    text = field.description or name
    helps = f"{text[0].upper()}{text[1:]}.  [env var: {WORKER_ENV_PREFIX}{name.upper()}; "
    helps += f"default: {default_text(name)}]"
    if field.annotation is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=helps)
    names = [SHORT_FLAGS[name]] if name in SHORT_FLAGS else []
    metavar = "|".join(get_args(PoolKind)) if name == "pool" else _METAVARS.get(_kind(name), "X")
    return click.option(*names, flag, name, default=None, metavar=metavar, help=helps)


def worker_settings(options: dict[str, Any]) -> WorkerSettings:
    """Take the settings out of the command's ``options`` and check them over the
    environment; :class:`click.BadParameter` names the option or variable and the value."""
    given = {name: options.pop(name, None) for name in WorkerSettings.model_fields}
    labels = {name: setting_flag(name) for name in given}
    try:
        return WorkerSettings.load(labels=labels, **given)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


def worker_options(
    *, app_callback: Callable[[click.Context, click.Parameter, Any], Any] | None = None
) -> Callable[[F], F]:
    """The worker command's options, outermost first. ``app_callback`` (which must refuse a
    missing value) lets ``-A`` come from elsewhere, e.g. before the subcommand."""

    def apply(fn: F) -> F:
        for decorator in reversed(_decorators(app_callback)):
            fn = decorator(fn)
        return fn

    return apply


def _decorators(
    app_callback: Callable[[click.Context, click.Parameter, Any], Any] | None,
) -> list[Callable[[F], F]]:
    return [
        click.option(
            "-A",
            "--app",
            "app_ref",
            envvar=[WORKER_ENV_PREFIX + "APP", "PGFLOW_APP"],
            show_envvar=True,
            required=app_callback is None,
            callback=app_callback,
            metavar="MODULE:ATTR",
            help="The app (or a flow, task or module of them), e.g. myproject.jobs:app.",
        ),
        _opt("--flows", env="FLOWS", metavar="A,B", help="Serve only these flows."),
        *(_setting_option(name) for name in WorkerSettings.model_fields),
        _opt(
            "-l",
            "--loglevel",
            env="LOGLEVEL",
            default="info",
            show_default=True,
            type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
        ),
        _opt(
            "--log-format",
            env="LOG_FORMAT",
            type=click.Choice(LOG_FORMATS),
            default="text",
            show_default=True,
        ),
        _opt(
            "--source",
            env="SOURCE",
            type=click.Choice(["claim", "kombu", "pgmq"]),
            default="claim",
            show_default=True,
            help="claim: read and claim in one statement; kombu: read messages through the "
            "pgflow:// kombu transport, then claim; pgmq: read with pgmq.read, then claim.",
        ),
        _opt(
            "--metrics-port",
            env="METRICS_PORT",
            type=click.IntRange(min=1, max=65535),
            default=None,
            help="Serve Prometheus metrics on this port at /metrics (needs pgflow-kombu[metrics]).",
        ),
        _opt(
            "--metrics-host",
            env="METRICS_HOST",
            default="127.0.0.1",
            show_default=True,
            help="Address the metrics server binds to (0.0.0.0 for every interface).",
        ),
        _opt(
            "--otel/--no-otel",
            env="OTEL",
            default=False,
            show_default=True,
            help="A span per task attempt through OpenTelemetry's configured tracer provider, "
            "in the trace that started the run (needs pgflow-kombu[otel]).",
        ),
    ]


def run_command(url: str, settings: WorkerSettings, **options: Any) -> int:
    """Load the app, print the banner, serve until stopped; returns the exit code."""
    from pgflow_kombu.db import migrations
    from pgflow_kombu.worker.loading import flows_of, hooks_of, load_target

    configure_logging(options["loglevel"], options["log_format"])
    app_ref: str = options["app_ref"]
    try:
        pending = migrations.pending(url)
        if pending:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
            raise PgFlowError(
                f"the database schema is not up to date (pending: {names}): "
                "run 'pgflow-kombu db upgrade' first"
            )
        target = load_target(app_ref)
        flows = flows_of(target)
        queues = [q.strip() for q in (options["flows"] or "").split(",") if q.strip()] or None
        worker = Worker(
            flows,
            url,
            settings,
            queues=queues,
            app_ref=app_ref,
            source=_source(options["source"], url),
            hooks=hooks_of(target),
        )
        stop_observing = observe(worker, url, options)
    except PgFlowError as exc:
        say(f"error: {exc}", event="worker_startup_failed", level=logging.ERROR)
        return ExitCode.STARTUP_FAILED
    head, rows = banner_rows(worker, app_ref, options["source"])
    if options.get("metrics_port") is not None:
        rows.append(
            ("metrics", f"http://{options['metrics_host']}:{options['metrics_port']}/metrics")
        )
    say(banner_text(head, rows), event="worker_banner", fields=dict(rows))
    try:
        return worker.run()
    finally:
        stop_observing()


def observe(worker: Worker, url: str, options: dict[str, Any]) -> Callable[[], None]:
    """Subscribe metrics and tracing to the worker's hooks as the options ask; start the
    metrics server. Returns what stops it."""
    stops: list[Callable[[], None]] = []
    if options.get("otel"):
        try:
            from pgflow_kombu.observability.tracing import TaskTracer
        except ImportError as exc:
            raise ConfigurationError(
                f"--otel needs OpenTelemetry: pip install 'pgflow-kombu[otel]' ({exc})"
            ) from exc
        tracer = TaskTracer(url)
        if not tracer.configured:
            say(
                "warning: --otel but no OpenTelemetry tracer provider is configured (run under "
                "opentelemetry-instrument, or set one up in the app's module): spans go nowhere",
                event="otel_not_configured",
                level=logging.WARNING,
            )
        tracer.subscribe(worker.hooks)
        stops.append(tracer.close)
    port = options.get("metrics_port")
    if port is not None:
        try:
            from pgflow_kombu.observability.metrics import WorkerMetrics, serve
        except ImportError as exc:
            raise ConfigurationError(
                f"--metrics-port needs prometheus-client: pip install 'pgflow-kombu[metrics]' "
                f"({exc})"
            ) from exc
        metrics = WorkerMetrics(url=url)
        metrics.subscribe(worker.hooks)
        host = options.get("metrics_host") or "127.0.0.1"
        try:
            stops.append(serve(metrics.registry, port, host))
        except OSError as exc:
            raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc}") from exc

    def stop() -> None:
        for each in stops:
            each()

    return stop


SOURCE_LABELS = {
    "claim": "read and claimed in one statement",
    "kombu": "pgflow:// kombu transport",
    "pgmq": "pgmq reads",
}


def _source(kind: str, url: str) -> Any:
    if kind == "pgmq":
        from pgflow_kombu.worker.source import PgmqSource

        return PgmqSource(url)
    if kind == "kombu":
        from pgflow_kombu.worker.consumer import KombuSource

        return KombuSource(url)
    return None  # the worker's default: read and claim in one statement


def banner(worker: Worker, app_ref: str, source: str) -> str:
    """The lines the worker prints when it starts (text log format)."""
    return banner_text(*banner_rows(worker, app_ref, source))


def banner_text(head: str, rows: list[tuple[str, str]]) -> str:
    return "\n".join([head, *(f"  {k:<9} {v}" for k, v in rows)])


def banner_rows(worker: Worker, app_ref: str, source: str) -> tuple[str, list[tuple[str, str]]]:
    """The banner's first line and its ``(name, value)`` rows (the fields of the
    ``worker_banner`` event with ``--log-format json``)."""
    from importlib.metadata import version as package_version

    from pgflow_kombu.client import CORE_VERSION

    version = package_version("pgflow-kombu")

    flows = ", ".join(f"{slug} ({len(flow.steps)} steps)" for slug, flow in worker.flows.items())
    rows = [
        ("app", app_ref),
        ("database", redact(worker.url)),
        ("pool", f"{worker.pool_kind} x {worker.concurrency}, prefetch {worker.prefetch}"),
        ("messages", SOURCE_LABELS.get(source, source)),
        ("flows", flows),
        (
            "schedules",
            ", ".join(f"{s.name} ({s.cron})" for s in worker.schedules) or "none in code",
        ),
        ("scheduler", "fires due ticks" if worker.scheduler is not None else "off"),
        (
            "liveness",
            f"heartbeat every {worker.membership.heartbeat_interval:g} s, "
            f"stalled after {worker.membership.stalled_after:g} s",
        ),
        (
            "retention",
            "none (runs are kept)"
            if worker.retention is None
            else f"prune runs finished over {worker.retention.retention} ago, "
            f"every {worker.retention.interval:g} s",
        ),
        (
            "shutdown",
            f"SIGTERM/Ctrl-C waits up to {worker.shutdown_timeout:g} s; Ctrl-C twice exits at once",
        ),
    ]
    head = f"pgflow-kombu worker {version} (pgflow core {CORE_VERSION}), pid {os.getpid()}"
    return head, rows
