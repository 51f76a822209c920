"""What the scenarios ask of every system, and the pieces the systems share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from benchmarks.workerbench.tasks import COUNT_KEY, RUN_TAG, STAMP_KEY, redis_client

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = Path(os.environ.get("TMPDIR", "/tmp"))


def bench_query(name: str) -> Any:
    """A named query of tests/sql (the benchmark's own are in tests/sql/bench_worker.sql)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.sql import test_query

    return test_query(name)


T = TypeVar("T")


class PerThread(Generic[T]):
    """One object per producer thread (a connection, a client), made on first use in that
    thread; ``close_all`` closes every one made."""

    def __init__(self, make: Callable[[], T], close: Callable[[T], None]) -> None:
        self._make = make
        self._close = close
        self._local = threading.local()
        self._made: list[T] = []
        self._lock = threading.Lock()

    def get(self) -> T:
        found: T | None = getattr(self._local, "value", None)
        if found is None:
            found = self._local.value = self._make()
            with self._lock:
                self._made.append(found)
        return found

    def close_all(self) -> None:
        with self._lock:
            made, self._made = self._made, []
        for value in made:
            self._close(value)


class Counter:
    """Completions seen so far, and a way to wait for a number of them."""

    def __init__(self, read: Callable[[], int], check: Callable[[], None] = lambda: None) -> None:
        self._read = read
        self._check = check  # raises when the jobs can no longer finish (their worker died)

    def read(self) -> int:
        return self._read()

    def wait_for(self, n: int, timeout: float = 900.0) -> tuple[float, float]:
        """Wait until ``n`` completions; returns (time of the first, time of the last)."""
        first = None
        deadline = time.monotonic() + timeout
        while True:
            done = self._read()
            now = time.time()
            if first is None and done >= 1:
                first = now
            if done >= n:
                return first or now, now
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {done} of {n} completions within {timeout} s")
            self._check()
            time.sleep(0.002)


class System:
    """One queue system with a 4-slot worker on the no-op job."""

    name = ""
    #: a job, once enqueued, survives a server crash (a durable commit, an fsynced append, a
    #: confirmed persistent message): the peers of equal durability to ours
    durable = False
    has_diamond = True
    has_batch = False
    #: the PostgreSQL database it keeps its jobs in (for the database CPU figures), if any
    database: str | None = None

    def setup(self) -> None: ...

    def teardown(self) -> None: ...

    def start_worker(self, wait: bool = True) -> None:
        """Start the worker; with ``wait``, return once a job went through it."""

    def stop_worker(self) -> None: ...

    def reset(self) -> None: ...

    def counter(self) -> Counter:
        raise NotImplementedError

    def enqueue(self, i: int) -> None:
        """Enqueue job ``i``; called from several threads at once."""
        raise NotImplementedError

    def enqueue_batch(self, items: range) -> None:
        raise NotImplementedError(f"{self.name} has no batched enqueue")

    def enqueue_diamond(self, i: int) -> None:
        raise NotImplementedError

    def stamp(self, i: int, timeout: float = 60.0) -> float:
        """Enqueue one stamp job and return when its handler started (epoch seconds)."""
        raise NotImplementedError


def spawn(command: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    log = open(LOG_DIR / f"{RUN_TAG}-{log_name}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
    )


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class WorkerProcess(System):
    """A system whose worker is one child process (its log in $TMPDIR/<tag>-<name>.log)."""

    process: subprocess.Popen[bytes] | None = None

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start_worker(self, wait: bool = True) -> None:
        command, env = self.command()
        self.process = spawn(command, env, self.log_name())
        if wait:
            self.stamp(-1)

    def stop_worker(self) -> None:
        stop_process(self.process)
        self.process = None

    def log_name(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name)

    def check_worker(self) -> None:
        process = self.process
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"the {self.name} worker exited with code {process.returncode}; see "
                f"{LOG_DIR / (RUN_TAG + '-' + self.log_name() + '.log')}"
            )


class RedisCounted(WorkerProcess):
    """A system whose jobs count themselves in Redis."""

    def reset(self) -> None:
        redis_client().delete(COUNT_KEY, STAMP_KEY)

    def counter(self) -> Counter:
        return Counter(lambda: int(redis_client().get(COUNT_KEY) or 0), self.check_worker)

    def wait_stamp(self, i: int, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_worker()
            item = redis_client().blpop([STAMP_KEY], timeout=1)
            if item is None:
                continue
            index, when = json.loads(item[1])
            if index == i:
                return float(when)
        raise TimeoutError(f"the {self.name} stamp job did not run")
