"""How kombu queue names become pgmq queue names.

pgmq caps a queue name at 47 characters and folds it to lower case in its table names. A name that
pgmq can take as it is (a pgflow slug: a letter or underscore, then letters, digits and
underscores, at most 47 of them) maps to itself, so a flow queue is consumed under the flow's own
slug and other pgflow workers keep reading it. Any other name (longer, with dots, dashes or ``@``
as Celery's reply and broadcast queues have, or starting with a digit) maps to ``0`` + 16 hex
digits of a hash of the whole name + ``_`` + a readable lower-case remainder, cut at 47
characters. Those names start with a digit, which no name of the first kind does, so the two
kinds never collide; two hashed names collide only if their 64-bit hashes do.

As in pgmq itself, names of the first kind that differ only in case share one queue.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["MAX_LENGTH", "channel_name", "pgmq_name", "table_name"]

MAX_LENGTH = 47
_AS_IS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,46}")
_UNREADABLE = re.compile(r"[^a-z0-9_]+")


def pgmq_name(queue: str) -> str:
    """The pgmq queue that stores kombu queue ``queue``."""
    if _AS_IS.fullmatch(queue):
        return queue
    digest = hashlib.blake2b(queue.encode("utf-8"), digest_size=8).hexdigest()
    readable = _UNREADABLE.sub("_", queue.lower()).strip("_")
    name = f"0{digest}_{readable}" if readable else f"0{digest}"
    return name[:MAX_LENGTH]


def table_name(pgmq_queue: str) -> str:
    """The table pgmq keeps the queue's messages in (schema ``pgmq``)."""
    return "q_" + pgmq_queue.lower()


def channel_name(pgmq_queue: str) -> str:
    """The LISTEN/NOTIFY channel on which inserts into the queue are announced."""
    return "pgflow_kombu." + table_name(pgmq_queue)
