from datetime import datetime, timedelta, timezone

from pgflow_kombu import PgFlow, StepContext

app = PgFlow()


@app.task(max_attempts=5, base_delay=2, timeout=30)  # pgflow's retry and timeout options
def send_email(to: str, subject: str) -> dict[str, str]:
    return {"sent": to, "subject": subject}


@app.task
def whoami(ctx: StepContext) -> int:  # a StepContext parameter is not an input
    return ctx.attempt


assert send_email("a@b.c", "hi") == {"sent": "a@b.c", "subject": "hi"}  # a plain call

app.start_worker()
try:
    now = send_email.delay(to="a@b.c", subject="now")  # a run starts now
    later = send_email.apply_async(kwargs={"to": "a@b.c", "subject": "later"}, countdown=60)
    at = app.enqueue_at(
        send_email,
        {"to": "a@b.c", "subject": "at"},
        datetime.now(timezone.utc) + timedelta(hours=1),
    )

    assert now.wait(timeout=30).output == {"send_email": {"sent": "a@b.c", "subject": "now"}}
    assert later.status == "started" and at.status == "started"  # held in the queue meanwhile
    assert whoami.delay().wait(timeout=30).output == {"whoami": 1}

    # The same idempotency key returns the first run and starts nothing.
    first = send_email.apply_async(
        kwargs={"to": "c@d.e", "subject": "once"}, idempotency_key="welcome-c@d.e"
    )
    again = send_email.apply_async(
        kwargs={"to": "c@d.e", "subject": "once"}, idempotency_key="welcome-c@d.e"
    )
    assert again.run_id == first.run_id

    # One key per input in a batch: a used or repeated key gives its run and starts nothing.
    batch = app.start_many(
        send_email,
        [{"to": "c@d.e", "subject": "once"}, {"to": "f@g.h", "subject": "hi"}] * 2,
        idempotency_keys=["welcome-c@d.e", "welcome-f@g.h"] * 2,
    )
    assert batch[0].run_id == first.run_id and batch[3].run_id == batch[1].run_id
finally:
    app.close()
