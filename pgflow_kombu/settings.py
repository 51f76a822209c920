"""Settings read from arguments and the environment (``PGFLOW_*``)."""

from __future__ import annotations

import os
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pgflow_kombu.db.urls import check_url
from pgflow_kombu.errors import ConfigurationError

__all__ = ["ENV_PREFIX", "Liveness", "Model", "Settings"]

ENV_PREFIX = "PGFLOW_"

Model = TypeVar("Model", bound=BaseModel)


class Settings(BaseModel):
    """What an application needs to reach its database and run its workers.

    Every field can come from the environment as ``PGFLOW_<FIELD>`` (e.g. ``PGFLOW_DATABASE_URL``);
    explicit arguments win over the environment.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str | None = None
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    heartbeat_interval: float = Field(default=5.0, gt=0)
    stalled_after: float = Field(default=30.0, gt=0, description="seconds without a heartbeat")
    poll_interval: float = Field(default=0.5, gt=0, description="fallback when NOTIFY is absent")

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from ``PGFLOW_*`` environment variables, then ``overrides`` (None = unset)."""
        return _load(cls, overrides)


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
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    keepalives_idle: int = Field(default=5, ge=1, description="seconds idle before a probe")
    keepalives_interval: int = Field(default=2, ge=1, description="seconds between probes")
    keepalives_count: int = Field(default=3, ge=1, description="probes lost: connection dead")
    tcp_user_timeout: float = Field(default=10.0, ge=0, description="seconds unacknowledged")
    client_connection_check_interval: float = Field(default=5.0, ge=0, description="seconds")
    statement_timeout: float = Field(default=60.0, ge=0, description="seconds")

    @classmethod
    def load(cls, **overrides: Any) -> Liveness:
        """From ``PGFLOW_*`` environment variables, then ``overrides`` (None = unset)."""
        return _load(cls, overrides)


def _load(model: type[Model], overrides: dict[str, Any]) -> Model:
    values: dict[str, Any] = {}
    for name in model.model_fields:
        env = os.environ.get(ENV_PREFIX + name.upper())
        if env not in (None, ""):
            values[name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return model(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
