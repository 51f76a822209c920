from pgflow_kombu import PgFlow, RunCancelled

app = PgFlow()
attempts: list[int] = []


@app.task(max_attempts=1)
def sync_account(account: int) -> str:
    attempts.append(account)
    if len(attempts) == 1:
        raise ConnectionError("the remote API is down")  # the first run fails
    return f"synced {account}"


app.start_worker()
try:
    run_id = sync_account.delay(account=7).run_id
    assert app.client.wait(run_id, timeout=30, raise_on_failure=False).status == "failed"

    assert app.retry_run(run_id) == 1  # from where it stopped: the one task queued again
    assert app.wait(run_id, timeout=30).output == {"sync_account": "synced 7"}

    later = sync_account.apply_async(kwargs={"account": 8}, countdown=3600)
    assert app.cancel_run(later.run_id, reason="account closed")  # False had it finished
    try:
        app.wait(later.run_id, timeout=30)
        raise AssertionError("not reached")
    except RunCancelled as exc:  # a kind of RunFailed
        assert exc.run.status == "cancelled"

    app.delete_run(later.run_id)  # the run with its steps, tasks and messages
    pruned = app.prune(older_than="30d")  # finished runs and queue archives older than that
    assert pruned.runs == 0  # everything here is younger
finally:
    app.close()
