"""What the transport stores and what it hands to kombu.

Two kinds of message live in pgmq queues:

* **kombu envelopes**, written by this transport (or any kombu virtual transport): a JSON object
  with ``body``, ``content-type``, ``headers`` and ``properties``. They are stored as they are,
  with the priority normalised to an integer 0-9 so that the queue index can order by it.
* **plain messages**, anything else: pgflow's task messages
  (``{"flow_slug", "run_id", "step_slug", "task_index"}``), or whatever ``pgmq.send`` stored. They
  arrive as kombu messages whose body is the JSON text (``application/json``) and whose
  ``delivery_info["pgmq_plain"]`` is True.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "Payload",
    "clamp_priority",
    "delivered_payload",
    "is_envelope",
    "prepare_envelope",
    "topic_pattern",
]

MIN_PRIORITY = 0
MAX_PRIORITY = 9

Payload = dict[str, Any]


def is_envelope(message: Any) -> bool:
    """True for a kombu envelope, False for a plain pgmq message (see the module docstring)."""
    return (
        isinstance(message, dict)
        and "body" in message
        and "content-type" in message
        and isinstance(message.get("properties"), dict)
    )


def clamp_priority(value: Any) -> int:
    try:
        priority = int(value)
    except (TypeError, ValueError):
        return MIN_PRIORITY
    return max(MIN_PRIORITY, min(MAX_PRIORITY, priority))


def prepare_envelope(message: Payload, *, eta_in_queue: bool) -> tuple[str, float]:
    """Normalise an outgoing envelope in place; return its JSON text and its delay in seconds.

    The delay is the longest of: the ``x-delay`` header (milliseconds, as RabbitMQ's delayed
    message exchange reads it), the ``DelaySeconds`` property (as kombu's SQS and pgmq transports
    read it) and, with ``eta_in_queue``, the time until Celery's ``eta`` header.
    """
    properties = message["properties"]
    properties["priority"] = clamp_priority(properties.get("priority"))
    headers = message.get("headers") or {}
    delay = max(
        _seconds(headers.get("x-delay"), scale=1000.0),
        _seconds(properties.get("DelaySeconds")),
        _until(headers.get("eta")) if eta_in_queue else 0.0,
    )
    return json.dumps(message), delay


def _seconds(value: Any, *, scale: float = 1.0) -> float:
    if value is None or isinstance(value, bool):
        return 0.0
    try:
        return max(float(value) / scale, 0.0)
    except (TypeError, ValueError):
        return 0.0


def _until(eta: Any) -> float:
    if not eta:
        return 0.0
    if isinstance(eta, datetime):
        when = eta
    else:
        text = str(eta)
        try:
            # Python 3.10's fromisoformat does not take the "Z" suffix.
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def delivered_payload(
    text: str,
    *,
    delivery_tag: int,
    queue: str,
    pgmq_queue: str,
    msg_id: int,
    read_ct: int,
) -> tuple[Payload, bool]:
    """The raw kombu message for a row read from a queue, and whether it is a plain message."""
    message = json.loads(text)
    pgmq_info = {
        "redelivered": read_ct > 1,
        "pgmq_queue": pgmq_queue,
        "pgmq_msg_id": msg_id,
        "pgmq_read_ct": read_ct,
    }
    if is_envelope(message):
        properties = message["properties"]
        properties["delivery_tag"] = delivery_tag
        info = properties.get("delivery_info")
        if not isinstance(info, dict):
            info = properties["delivery_info"] = {}
        info.update(pgmq_info, pgmq_plain=False)
        info.setdefault("exchange", "")
        info.setdefault("routing_key", queue)
        return message, False
    payload: Payload = {
        "body": text,
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {},
        "properties": {
            "delivery_tag": delivery_tag,
            "priority": 0,
            "delivery_info": {
                "exchange": "",
                "routing_key": queue,
                **pgmq_info,
                "pgmq_plain": True,
            },
        },
    }
    return payload, True


def topic_pattern(binding_key: str) -> str:
    """An anchored regular expression for an AMQP topic binding key, matched against
    ``"." + routing_key``: ``*`` is exactly one word, ``#`` zero or more words.

    It uses only constructs that Python's ``re`` and PostgreSQL's ``~`` read alike.
    """
    parts = []
    for word in binding_key.split("."):
        if word == "#":
            parts.append(r"(\.[^.]*)*")
        elif word == "*":
            parts.append(r"\.[^.]+")
        else:
            parts.append(r"\." + "".join(c if c.isalnum() or c == "_" else "\\" + c for c in word))
    return "^" + "".join(parts) + "$"
