"""A PgBouncer in transaction pooling mode in front of a test server, started by a fixture.

Every database of the server is reachable through it under its own name, as the server's
``postgres`` user (trust authentication on both sides, as on the test servers). ``url_for``
turns a direct URL into the same database through the pooler.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["PGBOUNCER", "PgBouncer", "unavailable_reason"]

PGBOUNCER = "/usr/sbin/pgbouncer"
RUN_AS = "postgres"  # the account pgbouncer runs as when started by root


def unavailable_reason() -> str | None:
    """Why PgBouncer cannot be started here, or None."""
    if shutil.which(PGBOUNCER) is None and shutil.which("pgbouncer") is None:
        return "pgbouncer is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    """One pgbouncer process (``pool_mode``: transaction by default) in front of ``server_url``."""

    def __init__(
        self,
        server_url: str,
        *,
        pool_mode: str = "transaction",
        pool_size: int = 5,
        ignore_startup_parameters: str = "",
        port: int | None = None,
        listen_addr: str = "127.0.0.1",
    ):
        parts = urlsplit(server_url)
        # a Unix-socket server (the embedded one) is named by ?host=<socket directory>
        self.server_host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
        self.server_port = parts.port or 5432
        self.user = parts.username or "postgres"
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.ignore_startup_parameters = ignore_startup_parameters
        self.port = port or _free_port()
        self.listen_addr = listen_addr
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def url_for(self, url: str, host: str = "127.0.0.1") -> str:
        """``url``'s database, through this pooler (reached at ``host``)."""
        parts = urlsplit(url)
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")])
        return urlunsplit(parts._replace(netloc=f"{self.user}@{host}:{self.port}", query=query))

    def start(self) -> None:
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={self.server_host} port={self.server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {self.listen_addr}\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.dir}\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'users.txt'}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 200\n"
            # The most recently used server connection is lent first (pgbouncer's default).
            "server_round_robin = 0\n"
            f"ignore_startup_parameters = {self.ignore_startup_parameters}\n"
            f"admin_users = {self.user}\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
        )
        command = [shutil.which(PGBOUNCER) or "pgbouncer", str(ini)]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root: drop to the server's account
            run_as = self._server_account()
            shutil.chown(self.dir, run_as)
            for path in self.dir.iterdir():
                shutil.chown(path, run_as)
            command[1:1] = ["-u", run_as]
        self._proc = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                err = err or self.log()
                self.stop()
                raise RuntimeError(f"pgbouncer exited at start: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        log = self.log()
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on {self.port} within 10 s: {log}")

    def _server_account(self) -> str:
        """The account that may reach the server: a Unix-socket server's directory is open only to
        its owner (the embedded server's); a TCP server is reached as RUN_AS."""
        if self.server_host.startswith("/"):
            return pwd.getpwuid(os.stat(self.server_host).st_uid).pw_name
        return RUN_AS

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
