"""Servers the benchmark starts for itself: a scratch PostgreSQL 15 cluster with default settings
(plus pg_stat_statements preloaded) and a Redis that fsyncs every write. Both are stopped on exit."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PG_BIN = Path(os.environ.get("BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))


_STOPS: list[Callable[[], None]] = []


def stop_servers() -> None:
    """Stop what this process started (also at exit; call it before an ``os._exit``)."""
    while _STOPS:
        _STOPS.pop()()


atexit.register(stop_servers)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _as_postgres(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def start_postgres(port: int) -> str:
    """A new cluster in a temporary directory on ``port``; returns the URL of its postgres db."""
    if port_open(port):
        raise RuntimeError(f"port {port} is taken: pass --url, or another --scratch-port")
    directory = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    data = directory / "data"
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {directory} -c shared_preload_libraries=pg_stat_statements"
    pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options]
    subprocess.run(
        _as_postgres([*pg_ctl, "-l", str(directory / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )

    def stop() -> None:
        subprocess.run(
            _as_postgres([*pg_ctl, "-m", "fast", "-w", "stop"]), check=False, capture_output=True
        )
        shutil.rmtree(directory, ignore_errors=True)

    _STOPS.append(stop)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def start_fsync_redis(port: int) -> str:
    """redis-server with ``appendonly yes``, ``appendfsync always`` in a temporary directory."""
    if port_open(port):
        raise RuntimeError(f"port {port} is taken: pass another --fsync-redis-port")
    directory = tempfile.mkdtemp(prefix="bench-redis-")
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "yes", "--appendfsync", "always", "--dir", directory]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop() -> None:
        process.terminate()
        process.wait(30)
        shutil.rmtree(directory, ignore_errors=True)

    _STOPS.append(stop)
    deadline = time.monotonic() + 10
    while not port_open(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0"
