"""URLs of the transport: what ``kombu.Connection`` is given, and the libpq URL it stands for.

kombu splits a ``pgflow://USER:PASSWORD@HOST:PORT/DATABASE`` URL into its connection fields, as
for Redis (the transport's ``can_parse_url`` is false): ``Connection.port`` and the others are
known before connecting, failover to alternate URLs works as for any broker, and the transport
rebuilds the libpq URL from those fields. kombu passes each query parameter as a keyword of its
own, which ``Connection`` refuses; a URL with libpq parameters (``?host=/socket/dir``,
``?sslmode=require``) is therefore written ``pgflow+postgresql://...``, which kombu hands over
whole, as for ``sqla+postgresql://``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

__all__ = ["kombu_url", "url_from_client"]


def kombu_url(url: str) -> str:
    """The URL to give ``kombu.Connection`` (or Celery's ``broker_url``) for a PostgreSQL URL."""
    parts = urlsplit(url)
    if parts.query:
        return "pgflow+" + urlunsplit(parts._replace(scheme="postgresql"))
    return urlunsplit(parts._replace(scheme="pgflow"))


def url_from_client(client: Any) -> str:
    """The database URL a ``kombu.Connection`` stands for, from its fields (see the module
    docstring); a ``pgflow+postgresql://`` URL arrives whole in ``hostname``."""
    hostname = client.hostname or ""
    if "://" in hostname:
        return str(hostname)
    user = quote(client.userid or "", safe="")
    password = quote(client.password or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    if hostname.startswith("/"):
        # A Unix socket directory: libpq takes it as the host parameter.
        host, query = "", urlencode({"host": hostname})
    elif ":" in hostname:
        host, query = f"[{hostname}]", ""  # IPv6 address, unbracketed by kombu
    else:
        host, query = quote(hostname, safe=""), ""
    netloc = auth + host + (f":{client.port}" if client.port else "")
    database = (client.virtual_host or "").strip("/")
    return urlunsplit(("pgflow", netloc, "/" + quote(database, safe=""), query, ""))
