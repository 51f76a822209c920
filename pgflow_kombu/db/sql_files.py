"""Where the SQL files live: inside the wheel (``pgflow_kombu/_sql``) or in a source checkout (``sql/``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

__all__ = ["sql_root"]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


@cache
def sql_root() -> Path:
    """Return the directory holding ``migrations/`` and ``queries/``.

    An installed wheel carries the files as package data; an editable install reads them from the
    repository's top-level ``sql/`` so that edits take effect without a rebuild.
    """
    for candidate in (_PACKAGE_DIR / "_sql", _PACKAGE_DIR.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError(
        f"pgflow-kombu SQL files not found next to {_PACKAGE_DIR}; the installation is incomplete"
    )
