"""Links as absolute paths (prefix included, no scheme or host): they stay right behind a
reverse proxy that terminates TLS or rewrites the host, where full URLs built from the request
could point to http:// or an inner name."""

from __future__ import annotations

from typing import Any

from jinja2 import pass_context
from starlette.requests import Request

__all__ = ["path_for", "template_path_for"]


def path_for(request: Request, name: str, /, **params: Any) -> str:
    return request.url_for(name, **params).path


@pass_context
def template_path_for(context: Any, name: str, /, **params: Any) -> str:
    """``url_for`` in the templates."""
    return path_for(context["request"], name, **params)
