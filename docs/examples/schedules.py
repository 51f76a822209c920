from pgflow_kombu import PgFlow

app = PgFlow()


@app.task(schedule="*/5 * * * *")  # every 5 minutes, with no arguments
def cleanup() -> int:
    return 0


report = app.flow("report", schedule="0 6 * * *")  # every day at 06:00 UTC, input {}


@report.step
def build(run: dict) -> dict:
    return {"full": run.get("full", False)}


app.schedule(
    report,
    cron="30 2 * * 1-5",
    input={"full": True},
    timezone="Europe/Berlin",
    name="report-weekdays",
    catch_up="latest",
)

app.sync_schedules()  # what every worker does when it starts
assert {s.name for s in app.list_schedules()} >= {"report-weekdays"}

app.pause_schedule("report-weekdays")
app.start_worker(scheduler=False)  # this sample starts its runs by hand
try:
    handle = app.trigger_schedule("report-weekdays")  # a run now, also when paused
    assert handle.wait(timeout=30).output == {"build": {"full": True}}
finally:
    app.close()
