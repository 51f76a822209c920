import threading
import time

from pgflow_kombu import PgFlow, Reject

app = PgFlow()
lock = threading.Lock()
load = {"now": 0, "most": 0}  # handlers running at once, as seen by the handlers


@app.task(max_concurrency=2, rate_limit="100/m")  # across every worker, together
def call_api(n: int) -> int:
    with lock:
        load["now"] += 1
        load["most"] = max(load["most"], load["now"])
    time.sleep(0.05)
    with lock:
        load["now"] -= 1
    return n


shop = app.flow("shop", priority=1)  # the default priority of this flow's runs


class CardDeclined(Reject):  # raising a Reject fails the task now: no retries
    pass


@shop.step(max_concurrency=1, concurrency_key="customer")  # one at a time per customer
def charge(run: dict) -> str:
    if run["card"] == "declined":
        raise CardDeclined(f"card of customer {run['customer']} declined")
    return "charged"


app.start_worker(concurrency=8)
try:
    handles = [call_api.delay(n=i) for i in range(6)]
    assert [h.wait(timeout=60).output for h in handles] == [{"call_api": i} for i in range(6)]
    assert load["most"] <= 2  # never more than max_concurrency at once

    ok = shop.start({"customer": 7, "card": "fine"}, priority=5)  # higher runs first
    assert ok.wait(timeout=30).output == {"charge": "charged"}

    declined = shop.start({"customer": 8, "card": "declined"})
    run = declined.wait(timeout=30, raise_on_failure=False)
    (step,) = run.step_states
    assert run.status == "failed" and step.tasks[0].attempts_count == 1  # of max_attempts=3
finally:
    app.close()
