import asyncio
import os

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from pgflow_kombu.dashboard import create_app

DATABASE_URL = os.environ["PGFLOW_DATABASE_URL"]


async def staff_only(request) -> bool:  # your authentication: True lets the request in,
    return request.headers.get("x-staff") == "yes"  # False answers 403 (a plain function works too)


dashboard = create_app(DATABASE_URL, read_only=True, auth=staff_only)
app = Starlette(routes=[Mount("/ops/pgflow", app=dashboard)])  # FastAPI: app.mount(...)

with TestClient(app) as http:  # here a test client; in production your ASGI server
    assert http.get("/ops/pgflow/", headers={"x-staff": "yes"}).status_code == 200
    assert http.get("/ops/pgflow/", headers={"x-staff": "no"}).status_code == 403
    assert http.get("/ops/pgflow/runs", headers={"x-staff": "yes"}).status_code == 200

# A mounted app's lifespan is not run: close its connections when your service stops.
asyncio.run(dashboard.state.dashboard.close())
