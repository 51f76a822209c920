"""MkDocs hook: the docstrings' Sphinx roles (``:class:`~a.B```) read as plain code in the site.

The API reference renders docstrings as Markdown, where a role shows up as ``:class:`` before the
code span; the role is dropped and a leading ``~`` keeps the last dotted part, as Sphinx does.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|meth|func|mod|attr|exc|data|obj):<code>(~?)([^<]*)</code>")


def _plain(match: re.Match[str]) -> str:
    name = match[2].rsplit(".", 1)[-1] if match[1] else match[2]
    return f"<code>{name}</code>"


def on_page_content(html: str, **_: Any) -> str:
    return ROLE.sub(_plain, html)
