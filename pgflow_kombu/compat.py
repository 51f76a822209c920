"""What the package uses from Python 3.11 and later, for Python 3.10."""

from __future__ import annotations

import asyncio
import enum
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["Runner", "StrEnum"]

T = TypeVar("T")

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:

    class StrEnum(str, enum.Enum):
        """:class:`enum.StrEnum`: members are strings, and ``str()`` of one is its value."""

        def __str__(self) -> str:
            return str(self.value)


if sys.version_info >= (3, 11):
    from asyncio import Runner
else:

    class Runner:
        """:class:`asyncio.Runner` as far as the package uses it: ``run`` several coroutines on
        one new event loop, then ``close`` it as :func:`asyncio.run` does."""

        def __init__(self) -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)

        def run(self, coro: Coroutine[Any, Any, T]) -> T:
            return self._loop.run_until_complete(coro)

        def close(self) -> None:
            loop = self._loop
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
