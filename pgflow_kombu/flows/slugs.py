"""Slug rules shared with the pgflow 0.8.1 schema.

A slug names a flow or a step. The database accepts a slug when ``pgflow.is_valid_slug`` does:
non-empty, at most 128 characters, ``^[a-zA-Z_][a-zA-Z0-9_]*$`` and not the reserved word ``run``.
A flow's pgmq queue is named after the flow and pgmq caps queue names at 47 characters, so a flow
slug that the database would accept can still be unusable: :func:`validate_flow_slug` checks both.
"""

from __future__ import annotations

import hashlib
import re

from pgflow_kombu.errors import FlowDefinitionError

__all__ = [
    "MAX_FLOW_SLUG_LENGTH",
    "MAX_SLUG_LENGTH",
    "RESERVED_SLUGS",
    "is_valid_flow_slug",
    "is_valid_slug",
    "slug_from_name",
    "validate_flow_slug",
    "validate_step_slug",
]

MAX_SLUG_LENGTH = 128
"""Longest slug ``pgflow.is_valid_slug`` accepts."""

MAX_FLOW_SLUG_LENGTH = 47
"""Longest usable flow slug: the flow's pgmq queue carries its name and pgmq caps names at 47."""

RESERVED_SLUGS = frozenset({"run"})
"""Slugs the database rejects; ``run`` is the key of the flow input in a step's input object."""

_SLUG_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_INVALID_RUN = re.compile(r"[^a-zA-Z0-9_]+")


def is_valid_slug(slug: object) -> bool:
    """Return whether ``slug`` passes ``pgflow.is_valid_slug`` (the check on flows and steps)."""
    return (
        isinstance(slug, str)
        and 0 < len(slug) <= MAX_SLUG_LENGTH
        and _SLUG_RE.fullmatch(slug) is not None
        and slug not in RESERVED_SLUGS
    )


def is_valid_flow_slug(slug: object) -> bool:
    """Return whether ``slug`` is a valid slug short enough to name the flow's pgmq queue."""
    return is_valid_slug(slug) and len(str(slug)) <= MAX_FLOW_SLUG_LENGTH


def _slug_problem(slug: object, max_length: int) -> str | None:
    if not isinstance(slug, str):
        return f"must be a string, not {type(slug).__name__}"
    if not slug:
        return "must not be empty"
    if len(slug) > max_length:
        return f"is {len(slug)} characters long; at most {max_length} are allowed"
    if _SLUG_RE.fullmatch(slug) is None:
        return (
            "must start with a letter or underscore and contain only letters, digits and "
            "underscores"
        )
    if slug in RESERVED_SLUGS:
        return "is reserved (the key 'run' holds the flow input)"
    return None


def validate_flow_slug(slug: object) -> str:
    """Return ``slug`` if it can name a flow, else raise :class:`FlowDefinitionError`.

    Beyond ``pgflow.is_valid_slug`` the flow slug must fit a pgmq queue name (47 characters).
    """
    problem = _slug_problem(slug, MAX_FLOW_SLUG_LENGTH)
    if problem is not None:
        if isinstance(slug, str) and MAX_FLOW_SLUG_LENGTH < len(slug) <= MAX_SLUG_LENGTH:
            problem += " (the flow's pgmq queue is named after it)"
        raise FlowDefinitionError(f"invalid flow slug {slug!r}: {problem}")
    assert isinstance(slug, str)
    return slug


def validate_step_slug(slug: object, *, flow_slug: str | None = None) -> str:
    """Return ``slug`` if it can name a step, else raise :class:`FlowDefinitionError`."""
    problem = _slug_problem(slug, MAX_SLUG_LENGTH)
    if problem is not None:
        where = f" in flow {flow_slug!r}" if flow_slug else ""
        raise FlowDefinitionError(
            f"invalid step slug {slug!r}{where}: {problem}",
            flow_slug=flow_slug,
            step_slug=slug if isinstance(slug, str) else None,
        )
    assert isinstance(slug, str)
    return slug


def slug_from_name(name: str, *, max_length: int = MAX_FLOW_SLUG_LENGTH) -> str:
    """Derive a valid slug from a Python name such as ``send_email`` or ``app.tasks.send_email``.

    The result is deterministic, so a task keeps its flow across deploys and other workers see the
    same flow: every run of characters outside ``[a-zA-Z0-9_]`` (dots, ``<``, ``>``, dashes)
    becomes ``_``; a leading digit gets a ``_`` prefix; the reserved ``run`` becomes ``run_``; a
    name longer than ``max_length`` keeps its head and ends with ``_`` and 8 hex digits of its
    SHA-1, so two long names that share a prefix still differ. A name that is already a valid slug
    of the right length is returned unchanged.

    >>> slug_from_name("send_email")
    'send_email'
    >>> slug_from_name("myapp.tasks.send_email")
    'myapp_tasks_send_email'
    """
    if not isinstance(name, str) or not name:
        raise FlowDefinitionError(f"cannot derive a slug from {name!r}: need a non-empty name")
    if not 10 <= max_length <= MAX_SLUG_LENGTH:
        raise ValueError(f"max_length must be between 10 and {MAX_SLUG_LENGTH}")
    slug = _INVALID_RUN.sub("_", name)
    if slug[0].isdigit():
        slug = "_" + slug
    if slug in RESERVED_SLUGS:
        slug += "_"
    if len(slug) > max_length:
        digest = hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).hexdigest()[:8]
        slug = f"{slug[: max_length - 9]}_{digest}"
    return slug
