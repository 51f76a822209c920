"""Node.js packages installed at test time into ``.reference/`` (never committed)."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pgflow_kombu.db.connect import connect

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / ".reference"


def npm_project(name: str, packages: list[str]) -> Path:
    """A directory under .reference/ with ``packages`` installed (cached between runs)."""
    directory = REFERENCE / name
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / ".installed.json"
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and json.loads(marker.read_text()) == packages:
            return directory
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(
                "npm is required for the reference tests (apt-get install nodejs npm)"
            )
        if not (directory / "package.json").exists():
            (directory / "package.json").write_text('{"private": true, "type": "module"}\n')
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", *packages],
            cwd=directory,
            check=True,
            timeout=600,
        )
        marker.write_text(json.dumps(packages))
    return directory


def run_node_script(project: Path, script: Path, *args: str, timeout: float = 120) -> str:
    """Run ``script`` with ``project``'s node_modules (copied beside them: ESM resolves by path)."""
    target = project / script.name
    shutil.copyfile(script, target)
    result = subprocess.run(
        ["node", str(target), *args],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"node {script.name} failed:\n{result.stderr}")
    return result.stdout


def node_connection(url: str) -> str:
    """Options for the ``postgres`` package (a host starting with / is a socket directory)."""
    with connect(url) as conn:
        info = conn.info
        options: dict[str, Any] = {
            "host": info.host,
            "port": info.port,
            "database": info.dbname,
            "username": info.user,
        }
        if info.password:
            options["password"] = info.password
    return json.dumps(options)
