"""Template filters: pretty JSON folded when large, durations and ages for people."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from html import escape
from typing import Any

from markupsafe import Markup

__all__ = ["COUNT_CAP", "FOLD_AT", "ago", "capped", "duration", "pretty_json", "seconds"]

COUNT_CAP = 10_000
"""Counts of runs by status stop here (shown as "10,000+"): their cost stays bounded."""

FOLD_AT = 2000
"""Characters of pretty JSON shown unfolded; a larger value is folded behind its size."""


def pretty_json(value: Any) -> Markup:
    if value is None:
        return Markup('<span class="muted">null</span>')
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    if len(text) <= FOLD_AT:
        return Markup(f'<pre class="json">{escape(text)}</pre>')
    head = escape(text[:300])
    return Markup(
        f'<details class="json-fold"><summary>{len(text):,} characters: '
        f'<code>{head}…</code></summary><pre class="json">{escape(text)}</pre></details>'
    )


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    seconds = ((end or datetime.now(timezone.utc)) - start).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def ago(at: datetime | None) -> str:
    if at is None:
        return ""
    return duration(at, None) + " ago"


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    return duration(
        datetime.fromtimestamp(0, timezone.utc), datetime.fromtimestamp(value, timezone.utc)
    )


def capped(n: int) -> str:
    return f"{n:,}+" if n >= COUNT_CAP else f"{n:,}"
