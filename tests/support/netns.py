"""A network namespace joined to the host by a veth pair, whose link a test can cut.

The host end gets ``10.213.N.1/30``, the namespace end ``10.213.N.2/30``. :meth:`NetNamespace.cut`
takes the namespace end down: the namespace loses its route to the host, and the host's packets
to it are dropped (the host end has no carrier), so neither side hears a reset or a close.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess

__all__ = ["NetNamespace", "unavailable_reason"]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces and veth pairs need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    return None


class NetNamespace:
    def __init__(self, prefix: str = "pgfk") -> None:
        # ``prefix`` keeps the names of one user of namespaces apart from another's (interface
        # names are at most 15 characters: keep it at 4).
        tag = f"{os.getpid() % 100000}{random.randrange(100):02d}"
        self.name = f"{prefix}{tag}"
        self.host_if = f"{prefix}h{tag}"
        self.ns_if = f"{prefix}n{tag}"
        taken = _ip("-o", "-4", "addr", "show").stdout
        subnet = random.choice([n for n in range(256) if f"10.213.{n}." not in taken])
        self.host_ip = f"10.213.{subnet}.1"
        self.ns_ip = f"10.213.{subnet}.2"
        self.network = f"10.213.{subnet}.0/30"

    @property
    def exec_prefix(self) -> list[str]:
        """Prefix of a command run inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def create(self) -> None:
        """Create the namespace and the link; raises RuntimeError saying why it failed."""
        steps = [
            ("netns", "add", self.name),
            ("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if),
            ("link", "set", self.ns_if, "netns", self.name),
            ("addr", "add", f"{self.host_ip}/30", "dev", self.host_if),
            ("link", "set", self.host_if, "up"),
            ("-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if),
            ("-n", self.name, "link", "set", self.ns_if, "up"),
            ("-n", self.name, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                self.delete()
                raise RuntimeError(f"ip {' '.join(step)}: {done.stderr.strip()}")

    def cut(self) -> None:
        self._set("down")

    def restore(self) -> None:
        self._set("up")

    def _set(self, state: str) -> None:
        done = _ip("-n", self.name, "link", "set", self.ns_if, state)
        if done.returncode != 0:
            raise RuntimeError(f"cannot set the link {state}: {done.stderr.strip()}")

    def delete(self) -> None:
        # Deleting the namespace destroys its veth end, and with it the host end.
        _ip("netns", "delete", self.name)
        _ip("link", "delete", self.host_if)
