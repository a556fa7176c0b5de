"""Hosts as network namespaces, for tests that need several machines on one.

The whole run happens inside one `unshare -n -m` parent: a network namespace with only loopback
and a bridge, and a private mount namespace holding /run/netns. Each "host" is an `ip netns`
child joined to the bridge by a veth pair. When the parent exits, its mount namespace and with it
every child namespace go away, so nothing is left behind even on a crash; no packet can reach the
real network. Processes are started with a parent-death signal, so they die with the run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

INNER_ENV = "KOMBAIN_NETNS_PARENT"
SUBNET = "10.77.0"  # the bridge is .1 (the balancer and the callers' host)


def permitted() -> str | None:
    """None if namespaces can be built here, else why not."""
    for tool in ("unshare", "ip", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux / iproute2)"
    probe = subprocess.run(["unshare", "-n", "-m", "--propagation", "private", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare -n -m is not permitted here: {probe.stderr.strip()}"
    return None


def inside() -> bool:
    return os.environ.get(INNER_ENV) == "1"


def reexec_inside(argv: list[str], cwd: Path | None = None, timeout: float | None = None) -> int:
    """Run `python argv...` as the namespace parent; returns its exit status."""
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, *argv])
    # /run/netns exists on the host (mkdir is harmless); the tmpfs over it is private to the parent.
    script = ("mkdir -p /run/netns && mount -t tmpfs kombain-netns /run/netns && "
              f"ip link set lo up && exec {cmd}")
    env = {**os.environ, INNER_ENV: "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(["unshare", "-n", "-m", "--propagation", "private", "sh", "-c", script],
                          env=env, cwd=cwd, timeout=timeout)
    return proc.returncode


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Host:
    """One namespace on the bridge, at `addr`."""

    name: str
    addr: str

    def popen(self, cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start `cmd` on this host. Call from the main thread: the death signal follows the thread
        that forked, and a pool thread that exits would take the process with it."""
        out = open(log, "ab")
        try:
            return subprocess.Popen(["ip", "netns", "exec", self.name, "setpriv", "--pdeathsig", "KILL", "--", *cmd],
                                    env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()


class Lan:
    """A bridge in the parent namespace (the parent is host .1) with `ip netns` hosts on it."""

    def __init__(self, bridge: str = "kbr0") -> None:
        if not inside():
            raise RuntimeError("Lan() runs only inside the namespace parent (see reexec_inside)")
        self.bridge = bridge
        self.gateway = f"{SUBNET}.1"
        self.hosts: list[Host] = []
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")

    def add(self, name: str) -> Host:
        host = Host(name, f"{SUBNET}.{10 + len(self.hosts)}")
        peer = f"kv{len(self.hosts)}"
        _ip("netns", "add", name)
        _ip("link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("link", "set", peer, "master", self.bridge, "up")
        _ip("-n", name, "addr", "add", f"{host.addr}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "route", "add", "default", "via", self.gateway)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        """Delete the namespaces now (they would go with the parent anyway)."""
        for h in self.hosts:
            subprocess.run(["ip", "netns", "del", h.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        self.hosts.clear()
