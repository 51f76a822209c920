from pgflow_kombu import PgFlow

app = PgFlow()
flow = app.flow("signup_conditions")


@flow.step
def profile(run: dict) -> dict:
    return {"verified": run["email"].endswith("@example.com")}


@flow.step(if_={"run": {"plan": "pro"}})  # runs only when the run input contains plan=pro
def provision(run: dict) -> str:
    return "pro workspace"


@flow.step(if_={"profile": {"verified": True}}, when_unmet="skip-cascade")
def invite(profile: dict) -> str:  # skipped, with everything after it, for unverified users
    return "invited"


@flow.step
def welcome(profile: dict, provision: str | None = None) -> str:  # a skipped dependency: absent
    return f"welcome ({provision or 'free'})"


app.start_worker()
try:
    pro = flow.start({"email": "a@example.com", "plan": "pro"}).wait(timeout=30)
    assert pro.output == {"invite": "invited", "welcome": "welcome (pro workspace)"}

    free = flow.start({"email": "a@other.org", "plan": "free"}).wait(timeout=30)
    assert free.output == {"welcome": "welcome (free)"}  # skipped leaves are left out
    states = app.client.get_run_with_states(free.run_id).step_states
    skipped = {s.step_slug: s.skip_reason for s in states if s.status == "skipped"}
    assert skipped == {"provision": "condition_unmet", "invite": "condition_unmet"}
finally:
    app.close()
