"""PostgreSQL URL helpers that keep the URL form (kombu and users pass URLs, not key=value strings)."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from pgflow_kombu.errors import ConfigurationError

__all__ = ["check_url", "database_of", "redact", "to_libpq", "with_database", "with_query"]

_SCHEMES = ("postgresql", "postgres", "pgflow")


def check_url(url: str) -> str:
    """Return ``url`` if it is a PostgreSQL URL we can use, else raise a :class:`ConfigurationError`."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigurationError(
            f"database URL {redact(url)!r} must start with postgresql:// "
            "(e.g. postgresql://user:password@localhost:5432/dbname)"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigurationError(f"database URL {redact(url)!r} has an invalid port") from None
    return url


def to_libpq(url: str) -> str:
    """Turn any accepted scheme (``pgflow://``, ``postgres://``) into one libpq understands."""
    parts = urlsplit(check_url(url))
    return urlunsplit(parts._replace(scheme="postgresql"))


def with_database(url: str, dbname: str) -> str:
    """Return ``url`` pointing at another database on the same server."""
    parts = urlsplit(check_url(url))
    return urlunsplit(parts._replace(path="/" + dbname))


def database_of(url: str) -> str:
    """Name of the database a URL points at (``postgres`` when it names none)."""
    path = urlsplit(check_url(url)).path.lstrip("/")
    if path:
        return unquote(path)
    query = dict(parse_qsl(urlsplit(url).query))
    return query.get("dbname", "postgres")


def with_query(url: str, **params: str) -> str:
    """Return ``url`` with query parameters added or replaced."""
    parts = urlsplit(check_url(url))
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
