"""Transport options (kombu's ``transport_options`` / Celery's ``broker_transport_options``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from pgflow_kombu.errors import ConfigurationError

__all__ = ["ACK_MODES", "MAX_SECONDS", "Options"]

ACK_MODES = ("delete", "archive")
MAX_SECONDS = 2**31 - 1  # pgmq takes visibility timeouts as integer seconds


@dataclass(frozen=True)
class Options:
    visibility_timeout: float = 1800.0
    polling_interval: float = 1.0
    sweep_interval: float = 5.0
    read_batch_size: int = 100
    ack_mode: str = "delete"
    eta_in_queue: bool = False
    durable_acks: bool = False
    pool_size: int = 4
    application_name: str = "pgflow-kombu"

    @property
    def extend_interval(self) -> float:
        """How often held messages get their visibility pushed forward again."""
        return max(self.visibility_timeout / 4, 0.5)

    @classmethod
    def from_transport_options(cls, options: Mapping[str, Any]) -> Options:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, field in known.items():
            if name not in options or options[name] is None:
                continue
            raw = options[name]
            kind = type(field.default)
            try:
                values[name] = _coerce(raw, kind)
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"transport option {name}={raw!r} is not a valid {kind.__name__}"
                ) from None
        opts = cls(**values)
        opts.check()
        return opts

    def check(self) -> None:
        for name in ("visibility_timeout", "polling_interval", "sweep_interval"):
            value = getattr(self, name)
            # NaN and infinity are refused too: these become timer and pgmq integer arguments
            if not 0 < value <= MAX_SECONDS:
                raise ConfigurationError(
                    f"transport option {name} must be > 0 and <= {MAX_SECONDS} seconds, "
                    f"got {value!r}"
                )
        if not 1 <= self.read_batch_size <= MAX_SECONDS:
            raise ConfigurationError(
                f"transport option read_batch_size must be >= 1, got {self.read_batch_size!r}"
            )
        if self.ack_mode not in ACK_MODES:
            raise ConfigurationError(
                f"transport option ack_mode must be one of {', '.join(ACK_MODES)}, "
                f"not {self.ack_mode!r}"
            )
        if self.pool_size < 0:
            raise ConfigurationError(
                f"transport option pool_size must be >= 0, got {self.pool_size!r}"
            )


def _coerce(raw: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(raw, str):
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return bool(raw)
    if kind is int:
        value = float(raw)
        if not value.is_integer():
            raise ValueError(raw)
        return int(value)
    return kind(raw)
