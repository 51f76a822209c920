import asyncio

from pgflow_kombu import PgFlow

app = PgFlow()
thumbs = app.flow("thumbnails")


@thumbs.map  # a root map: the run input is the array, one task per element
async def resize(url: str) -> str:  # async handlers: awaited in any pool, natively in asyncio
    await asyncio.sleep(0)
    return url.replace(".png", "_small.png")


@thumbs.step
def publish(resize: list[str]) -> int:
    return len(resize)


app.start_worker()
try:
    run = thumbs.start(["a.png", "b.png", "c.png"]).wait(timeout=30)
    assert run.output == {"publish": 3}
    assert thumbs.start([]).wait(timeout=30).output == {"publish": 0}  # an empty array: no tasks
finally:
    app.close()
