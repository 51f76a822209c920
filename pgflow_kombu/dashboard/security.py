"""Who may see the dashboard and act on it: basic auth, the host application's own check, and
CSRF tokens for every POST.

CSRF: a signed double-submit token. The first page a browser gets sets cookie ``pgflow_csrf``
to ``<random>.<hmac>``; every form carries the same value in its ``csrf`` field; a POST is
accepted only when both are present, equal and signed with the app's secret (so a token planted
from a sibling domain, which cannot be signed, is refused too).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "PASSWORD_ENV",
    "USER_ENV",
    "AuthCheck",
    "Guard",
    "basic_auth_from_env",
    "check_csrf",
    "csrf_token",
    "sign",
]

USER_ENV = "PGFLOW_DASHBOARD_USER"
PASSWORD_ENV = "PGFLOW_DASHBOARD_PASSWORD"
CSRF_COOKIE = "pgflow_csrf"
CSRF_FIELD = "csrf"

AuthCheck = Callable[[Request], "bool | Awaitable[bool]"]
"""The host application's check: True lets the request in, False answers 403."""


def basic_auth_from_env() -> tuple[str, str] | None:
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    return (user, password) if user and password else None


def sign(secret: bytes, nonce: str) -> str:
    mac = hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()
    return f"{nonce}.{mac}"


def csrf_token(secret: bytes, request: Request) -> str:
    """The browser's token: its cookie when validly signed, else a new one (set by the page)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if _valid(secret, current):
        return current
    return sign(secret, secrets.token_urlsafe(18))


def check_csrf(secret: bytes, request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return (
        bool(submitted) and hmac.compare_digest(cookie, submitted or "") and _valid(secret, cookie)
    )


def _valid(secret: bytes, token: str) -> bool:
    nonce, _, mac = token.partition(".")
    return bool(nonce and mac) and hmac.compare_digest(sign(secret, nonce), token)


class Guard:
    """ASGI middleware: basic auth (when configured), then the host's ``auth`` check."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        basic_auth: tuple[str, str] | None,
        auth: AuthCheck | None,
    ) -> None:
        self.app = app
        self.basic_auth = basic_auth
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.basic_auth is not None and not self._basic_ok(request):
            response = PlainTextResponse(
                "authentication required",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="pgflow-kombu dashboard"'},
            )
            await response(scope, receive, send)
            return
        if self.auth is not None:
            allowed: Any = self.auth(request)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                await PlainTextResponse("forbidden", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _basic_ok(self, request: Request) -> bool:
        assert self.basic_auth is not None
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        want_user, want_password = self.basic_auth
        return hmac.compare_digest(user.encode(), want_user.encode()) & hmac.compare_digest(
            password.encode(), want_password.encode()
        )
