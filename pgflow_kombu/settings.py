"""Settings read from arguments and the environment (``PGFLOW_*``)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pgflow_kombu.db.urls import check_url
from pgflow_kombu.errors import ConfigurationError

ENV_PREFIX = "PGFLOW_"


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
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            env = os.environ.get(ENV_PREFIX + name.upper())
            if env not in (None, ""):
                values[name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigurationError(f"invalid settings: {problems}") from None
