"""kombu's own integration contract, unmodified, against ``pgflow://``.

The base classes come from ``t/integration/common.py`` of the kombu sdist matching the installed
kombu; it is downloaded once into ``.reference/kombu`` (never committed) and imported as it is.
"""

from __future__ import annotations

import fcntl
import importlib.util
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import kombu
import pytest

import pgflow_kombu  # noqa: F401 - registers the pgflow:// alias
from tests.celery_app.urls import broker_url, parsed_broker_url

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / ".reference" / "kombu"


def _kombu_integration_common() -> ModuleType:
    version = kombu.__version__
    source = REFERENCE / f"kombu-{version}"
    common = source / "t" / "integration" / "common.py"
    REFERENCE.mkdir(parents=True, exist_ok=True)
    # Parallel test processes collect this module at once: one downloads, the others wait.
    with open(REFERENCE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not common.exists():
            sdist = REFERENCE / f"kombu-{version}.tar.gz"
            if not sdist.exists():
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "download",
                        "--no-deps",
                        "--no-binary",
                        ":all:",
                        f"kombu=={version}",
                        "-d",
                        str(REFERENCE),
                    ],
                    check=True,
                    capture_output=True,
                )
            with tarfile.open(sdist) as archive:
                archive.extractall(REFERENCE, filter="data")
    spec = importlib.util.spec_from_file_location("kombu_integration_common", common)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Loaded from a file at run time: its classes are unknown to the type checker.
common: Any = _kombu_integration_common()


@pytest.fixture
def connection(db_url: str) -> Iterator[kombu.Connection]:
    conn = kombu.Connection(broker_url(db_url))
    yield conn
    conn.release()


@pytest.fixture
def invalid_connection() -> kombu.Connection:
    # Nothing listens on port 1: refused at once.
    return kombu.Connection("pgflow://postgres@127.0.0.1:1/nowhere", connect_timeout=2)


@pytest.fixture
def failover_connection(db_url: str) -> Iterator[kombu.Connection]:
    dead = "pgflow://postgres@127.0.0.1:1/nowhere"
    live = parsed_broker_url(db_url)
    conn = kombu.Connection(f"{dead};{live}", connect_timeout=2)
    yield conn
    conn.release()


class TestBasicFunctionality(common.BasicFunctionality):
    pass


class TestExchangeTypes(common.BaseExchangeTypes):
    pass


class TestTimeToLive(common.BaseTimeToLive):
    pass


class TestPriority(common.BasePriority):
    pass


class TestMessage(common.BaseMessage):
    pass


class TestEventLoop(common.BaseEventLoop):
    pass


class TestFailover(common.BaseFailover):
    pass
