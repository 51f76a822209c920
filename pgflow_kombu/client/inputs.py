"""Checks of what callers hand the client (run inputs, run ids, delays, timeouts), done
before anything is written."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from pgflow_kombu.errors import (
    ConfigurationError,
    FlowDefinitionError,
    FlowInputError,
    RunNotFound,
)
from pgflow_kombu.flows.dispatch import schedule_delay
from pgflow_kombu.flows.flow import Flow
from pgflow_kombu.flows.jsondata import Json, NotJsonError, to_json
from pgflow_kombu.flows.options import check_priority

__all__ = [
    "as_uuid",
    "check_idempotency",
    "check_idempotency_keys",
    "check_run_priority",
    "check_timeout",
    "delay_from",
    "run_id_text",
    "run_input",
    "run_keys_of",
]


def delay_from(delay_seconds: float | None, scheduled_at: datetime | None) -> int:
    """Whole seconds to hold a run's first tasks; raises FlowInputError (see schedule_delay)."""
    return schedule_delay(delay_seconds, scheduled_at)


def run_input(value: Any, index: int | None = None) -> Json:
    """A run input as JSON that ``jsonb`` accepts, else :class:`FlowInputError` saying where not.

    Every start goes through here (the app, the CLI, ``start_many``), so PostgreSQL never sees
    NaN, Infinity or a NUL character.
    """
    try:
        return to_json(value)
    except NotJsonError as exc:
        which = "the run input" if index is None else f"run input #{index}"
        raise FlowInputError(f"{which} is not JSON that PostgreSQL accepts: {exc}") from exc


def run_id_text(value: UUID | str | None) -> str | None:
    """A caller's run id as text for ``::uuid``; raises :class:`FlowInputError` if not a UUID."""
    if value is None:
        return None
    if isinstance(value, UUID):
        return str(value)
    try:
        return str(UUID(str(value)))
    except ValueError:
        raise FlowInputError(f"run_id {value!r} is not a UUID") from None


def check_idempotency(key: str | None, ttl: float | None) -> str | None:
    """An idempotency key (a non-empty string, or None) and its time to live (seconds > 0)."""
    if key is not None and (not isinstance(key, str) or not key or "\x00" in key):
        raise FlowInputError(f"idempotency_key must be a non-empty string, got {key!r}")
    if ttl is not None and key is None:
        raise FlowInputError("idempotency_ttl needs an idempotency_key")
    _check_ttl(ttl)
    return key


def _check_ttl(ttl: float | None) -> None:
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0
    ):
        raise FlowInputError(f"idempotency_ttl must be a number of seconds > 0, got {ttl!r}")


def check_idempotency_keys(
    keys: Sequence[str | None] | None, count: int, ttl: float | None
) -> list[str | None] | None:
    """A batch's idempotency keys: one per input (``count``), each a non-empty string or None
    (no key), checked like :func:`check_idempotency`; the error names the first bad one."""
    if keys is None:
        if ttl is not None:
            raise FlowInputError("idempotency_ttl needs idempotency_keys")
        return None
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
        raise FlowInputError(
            f"idempotency_keys must be a list with one key (or None) per input, got {keys!r}"
        )
    if len(keys) != count:
        raise FlowInputError(
            f"idempotency_keys has {len(keys)} keys but there are {count} inputs: give one key "
            "(or None) per input"
        )
    for index, key in enumerate(keys):
        if key is not None and (not isinstance(key, str) or not key or "\x00" in key):
            raise FlowInputError(
                f"idempotency_keys[{index}] must be a non-empty string or None, got {key!r}"
            )
    _check_ttl(ttl)
    return list(keys)


def check_timeout(timeout: float | None) -> None:
    """A wait's timeout: None (for ever) or a number of seconds >= 0."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ConfigurationError(
            f"timeout must be a number of seconds >= 0 or None, got {timeout!r}"
        )


def as_uuid(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise RunNotFound(f"{value!r} is not a run id (expected a UUID)") from None


def check_run_priority(priority: object, slug: str) -> None:
    """A run's priority is None or an integer; raises FlowInputError otherwise."""
    if priority is None:
        return
    try:
        check_priority(priority, f"flow {slug!r}")
    except FlowDefinitionError as exc:
        raise FlowInputError(str(exc)) from None


def run_keys_of(flow: object, data: Json) -> dict[str, str]:
    """A run's concurrency keys, when ``flow`` is a flow object (it may declare keyed limits)."""
    return dict(flow.run_keys(data)) if isinstance(flow, Flow) else {}
