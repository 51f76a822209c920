"""Settings read from arguments and the environment (``PGFLOW_*``): the one definition of each.

:class:`Settings` is what an application needs, :class:`WorkerSettings` how a worker runs (the
``Worker`` constructor, ``app.start_worker`` and the ``pgflow-kombu worker`` command all read it,
so the three share one set of names, defaults and checks), :class:`Liveness` how connections
notice a dead peer.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pgflow_kombu.db.urls import check_url
from pgflow_kombu.durations import parse_duration
from pgflow_kombu.errors import ConfigurationError

__all__ = [
    "DEPRECATED_ENV",
    "ENV_PREFIX",
    "WORKER_DEFAULTS",
    "WORKER_ENV_PREFIX",
    "Liveness",
    "Model",
    "PoolKind",
    "Settings",
    "WorkerSettings",
]

ENV_PREFIX = "PGFLOW_"
WORKER_ENV_PREFIX = "PGFLOW_WORKER_"

PoolKind = Literal["threads", "processes", "asyncio"]

# Environment variables of earlier releases, still read (a worker setting's own
# PGFLOW_WORKER_<FIELD> wins) with a warning that names the new one.
DEPRECATED_ENV: dict[str, str] = {
    "PGFLOW_HEARTBEAT_INTERVAL": "heartbeat_interval",
    "PGFLOW_STALLED_AFTER": "stalled_after",
}

Model = TypeVar("Model", bound=BaseModel)


class WorkerSettings(BaseModel):
    """How a worker runs: its pool, liveness, retention and scheduler.

    Each field is, with the same default and checks, a keyword of ``Worker(...)`` and
    ``app.start_worker(...)``, the environment variable ``PGFLOW_WORKER_<FIELD>`` and the option
    ``--<field>`` of ``pgflow-kombu worker`` (underscores as dashes). Keywords and options win
    over the environment. ``PgFlow(**fields)`` sets an app's defaults for ``start_worker``, and
    its ``stalled_after`` is when ``app.list_workers()`` counts a worker as stale.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(default=4, ge=1, description="handlers running at once")
    pool: PoolKind = Field(
        default="threads", description="where handlers run: threads, processes or asyncio"
    )
    prefetch: int | None = Field(
        default=None,
        ge=1,
        description="tasks claimed ahead of free slots (unset: twice the concurrency)",
    )
    shutdown_timeout: float = Field(
        default=30.0, gt=0, description="seconds a stop waits for running handlers"
    )
    heartbeat_interval: float = Field(default=5.0, gt=0, description="seconds between heartbeats")
    stalled_after: float = Field(
        default=30.0,
        gt=0,
        description="seconds without a heartbeat after which a worker's tasks are requeued "
        "(and it is listed as stale); more than heartbeat_interval",
    )
    recovery_interval: float | None = Field(
        default=None,
        gt=0,
        description="seconds between stalled-task recovery passes "
        "(unset: the larger of heartbeat_interval and half of stalled_after)",
    )
    retention: timedelta | None = Field(
        default=None,
        description="prune runs finished longer ago than this (7d, 12h, 30m, or seconds) and as "
        "old queue archive messages, and idle rate-limit buckets, one worker at a time "
        "(unset: runs are kept)",
    )
    retention_interval: float = Field(
        default=300.0, gt=0, description="seconds between retention rounds"
    )
    # Each report runs in a subtransaction; PostgreSQL caches 64 per transaction before it spills.
    report_batch: int = Field(
        default=50, ge=1, description="most outcomes reported in one transaction"
    )
    fetch_timeout: float = Field(
        default=1.0, gt=0, description="seconds one drain of the message source waits"
    )
    synchronous_commit: bool = Field(
        default=False,
        description="wait for the disk on claims and reports (publishes always wait)",
    )
    scheduler: bool = Field(
        default=True,
        description="fire due ticks of the database's schedules (each tick starts once however "
        "many workers do)",
    )
    scheduler_poll_interval: float = Field(
        default=5.0, gt=0, description="longest sleep of the scheduler thread"
    )

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> Any:
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _live_workers_never_look_dead(self) -> WorkerSettings:
        if self.stalled_after <= self.heartbeat_interval:
            raise ValueError(
                f"stalled_after ({self.stalled_after:g} s) must exceed heartbeat_interval "
                f"({self.heartbeat_interval:g} s), or live workers would look dead"
            )
        return self

    @property
    def claim_ahead(self) -> int:
        """The prefetch in force: as set, else twice the concurrency."""
        return 2 * self.concurrency if self.prefetch is None else self.prefetch

    @classmethod
    def load(cls, labels: Mapping[str, str] | None = None, **overrides: Any) -> WorkerSettings:
        """From ``PGFLOW_WORKER_*`` environment variables, then ``overrides`` (None = unset).

        ``labels`` names where each override came from (e.g. a command's ``--concurrency``)
        for the error a bad value raises; by default its keyword.
        """
        return _load(cls, overrides, prefix=WORKER_ENV_PREFIX, labels=labels)

    def replace(self, labels: Mapping[str, str] | None = None, **overrides: Any) -> WorkerSettings:
        """These settings with ``overrides`` (None = unchanged), checked as :meth:`load` does."""
        return _load(type(self), overrides, prefix=WORKER_ENV_PREFIX, labels=labels, base=self)


class Settings(BaseModel):
    """What an application needs to reach its database and run its workers.

    Every field can come from the environment as ``PGFLOW_<FIELD>`` (e.g. ``PGFLOW_DATABASE_URL``);
    ``worker`` from ``PGFLOW_WORKER_<FIELD>`` (see :class:`WorkerSettings`). Explicit arguments
    win over the environment; :meth:`load` takes the worker's fields as keywords too.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str | None = None
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    poll_interval: float = Field(default=0.5, gt=0, description="fallback when NOTIFY is absent")
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from ``PGFLOW_*`` environment variables, then ``overrides`` (None = unset);
        an override named after a :class:`WorkerSettings` field sets ``worker``'s."""
        worker_fields = {k: overrides.pop(k) for k in list(overrides) if k in WORKER_FIELDS}
        given = overrides.pop("worker", None)
        if isinstance(given, WorkerSettings):
            worker = given.replace(**worker_fields)
        else:
            worker = WorkerSettings.load(**{**(given or {}), **worker_fields})
        return _load(cls, {**overrides, "worker": worker})


class Liveness(BaseModel):
    """How soon each side of a database connection notices that the other is gone.

    Every connection pgflow-kombu opens (worker, transport, client) asks libpq for TCP keepalives
    and ``tcp_user_timeout``, and asks its server session for the same keepalives (per-session
    ``tcp_keepalives_*``, ``tcp_user_timeout``, and on PostgreSQL >= 14
    ``client_connection_check_interval``), so that a cut link fails the client's statements, and
    ends the server's backend, within about ``keepalives_idle + keepalives_interval *
    keepalives_count`` seconds (idle) or ``tcp_user_timeout`` (a statement in flight), instead of
    the kernel defaults (2 hours of idle, ~15 minutes of retransmits). Each field comes from
    ``PGFLOW_<FIELD>``; the libpq parameters of the same name in a database URL win.
    ``statement_timeout`` bounds the statements of workers, transport and client (not
    migrations); 0 turns a setting off.

    ``poll_only`` is for a transaction-pooling PgBouncer (or any pooler that lends a server
    connection per transaction) between the process and PostgreSQL: its connections then carry no
    session state (no startup ``options``, no session settings, no prepared statements, no LISTEN,
    no session advisory locks) and everything that waits on NOTIFY wakes by polling instead.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    keepalives_idle: int = Field(default=5, ge=1, description="seconds idle before a probe")
    keepalives_interval: int = Field(default=2, ge=1, description="seconds between probes")
    keepalives_count: int = Field(default=3, ge=1, description="probes lost: connection dead")
    tcp_user_timeout: float = Field(default=10.0, ge=0, description="seconds unacknowledged")
    client_connection_check_interval: float = Field(default=5.0, ge=0, description="seconds")
    statement_timeout: float = Field(default=60.0, ge=0, description="seconds")
    poll_only: bool = Field(default=False, description="no session state; wake by polling")

    @classmethod
    def load(cls, **overrides: Any) -> Liveness:
        """From ``PGFLOW_*`` environment variables, then ``overrides`` (None = unset)."""
        return _load(cls, overrides)


WORKER_FIELDS = frozenset(WorkerSettings.model_fields)
WORKER_DEFAULTS = WorkerSettings()
"""Every worker setting at its default: for the parts that take one alone (a bare Scheduler)."""


def _from_env(model: type[BaseModel], prefix: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The fields set in the environment, and the variable each came from."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    deprecated = (
        {field: old for old, field in DEPRECATED_ENV.items()} if model is WorkerSettings else {}
    )
    for name, field in model.model_fields.items():
        if isinstance(field.default_factory, type) and issubclass(field.default_factory, BaseModel):
            continue  # a nested model loads its own variables
        variable = prefix + name.upper()
        value = os.environ.get(variable)
        old = deprecated.get(name)
        if value in (None, "") and old is not None and os.environ.get(old) not in (None, ""):
            warnings.warn(
                f"{old} is deprecated and will stop working: set {variable} instead",
                FutureWarning,
                stacklevel=4,
            )
            variable, value = old, os.environ[old]
        if value not in (None, ""):
            values[name], sources[name] = value, variable
    return values, sources


def _load(
    model: type[Model],
    overrides: Mapping[str, Any],
    *,
    prefix: str = ENV_PREFIX,
    labels: Mapping[str, str] | None = None,
    base: BaseModel | None = None,
) -> Model:
    if base is None:
        values, sources = _from_env(model, prefix)
    else:
        values, sources = dict(base), {}
    for name, value in overrides.items():
        if value is not None:
            values[name], sources[name] = value, (labels or {}).get(name, name)
    try:
        return model(**values)
    except ValidationError as exc:
        problems = "; ".join(_problem(e, values, sources, model) for e in exc.errors())
        what = {WorkerSettings: "worker settings", Liveness: "connection settings"}
        raise ConfigurationError(f"invalid {what.get(model, 'settings')}: {problems}") from None


def _problem(
    error: Any, values: Mapping[str, Any], sources: Mapping[str, str], model: type[BaseModel]
) -> str:
    """One line per invalid value: where it came from, the value, what is wrong."""
    loc = error["loc"]
    if not loc:  # a check across fields: its message names them
        return str(error["msg"]).removeprefix("Value error, ")
    name = str(loc[0])
    where = sources.get(name, f"{ENV_PREFIX}{name.upper()}")
    if error["type"] == "extra_forbidden":
        return f"{where}: no such setting (known: {', '.join(model.model_fields)})"
    shown = f"={values[name]!r}" if name in values else ""
    return f"{where}{shown}: {str(error['msg']).removeprefix('Value error, ')}"
