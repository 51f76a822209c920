from pgflow_kombu import PgFlow

app = PgFlow()


@app.task
def extract(n: int) -> list[int]:
    return list(range(1, n + 1))


@app.task
def square(x: int) -> int:
    return x * x


@app.task
def total(values: list[int]) -> int:
    return sum(values)


@app.task
def largest(values: list[int]) -> int:
    return max(values)


@app.task
def report(results: list[int]) -> str:
    return f"total {results[0]}, largest {results[1]}"


# extract, then square each element (a map step), then two branches, then their join.
pipeline = app.register((extract >> square.map() >> [total, largest] >> report).to_flow("numbers"))

assert [s.slug for s in pipeline.steps] == ["extract", "square", "total", "largest", "report"]

app.start_worker()
try:
    assert pipeline.start({"n": 4}).wait(timeout=30).output == {"report": "total 30, largest 16"}
finally:
    app.close()
