"""Fan-out / fan-in with map steps: a root map over the run input, a map over a map, a reduce.

Async handlers run on the worker's event loop as well as in threads.

Run: ``python -m examples.fanout``
"""

from __future__ import annotations

import asyncio

from examples.common import running_worker, show
from pgflow_kombu import PgFlow

app = PgFlow()
stats = app.flow("word_stats")


@stats.map  # a root map: the run input must be an array; one task per element
async def fetch(url: str) -> str:
    await asyncio.sleep(0.05)  # stands in for an HTTP request
    return f"text of {url} " * (len(url) % 5 + 1)


@stats.map(over="fetch")
def count_words(text: str) -> int:
    return len(text.split())


@stats.step
def total(count_words: list[int]) -> dict[str, int]:
    return {"documents": len(count_words), "words": sum(count_words)}


def main() -> None:
    with running_worker(app, concurrency=8):
        urls = [f"https://example.com/page/{n}" for n in range(12)]
        show("output", stats.start(urls).wait(timeout=30).output)
        show("empty input (maps complete at once)", stats.start([]).wait(timeout=30).output)


if __name__ == "__main__":
    main()
