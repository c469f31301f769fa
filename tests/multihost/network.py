"""A private network of Linux network namespaces for the multi-host test: made, used, removed.

Each "host" is a network namespace with its own loopback and one veth interface; the other end of
every veth is a port of a bridge inside a namespace of its own (the switch). The test process
joins the same segment through one more veth pair (its end in this namespace, the other on the
bridge), so it can reach every host and act as the client and the fake providers. Nothing is
routed anywhere else: the segment has no gateway and no address outside SUBNET.

Everything made here carries this process's id in its name, and `remove()` deletes exactly that:
the processes still running in those namespaces (by pid, from `ip netns pids`), then the
namespaces (which takes their interfaces with them) and the test process's veth end.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

SUBNET = ipaddress.ip_network("10.231.0.0/24")
CLIENT_ADDRESS = "10.231.0.1"  # the test process's end of the segment


class NamespacesUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no `ip`, no permission)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def why_unavailable() -> str | None:
    """None when this process can make network namespaces; otherwise the reason it cannot."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"mhprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    try:
        veth = _ip("-n", probe, "link", "add", "name", "probea", "type", "veth", "peer", "name", "probeb", check=False)
        if veth.returncode != 0:
            return f"veth pairs cannot be made: {veth.stderr.strip()}"
    finally:
        _ip("netns", "delete", probe, check=False)
    routes = _ip("route", "show", str(SUBNET), check=False).stdout.strip()
    if routes:
        return f"{SUBNET} is already routed in this namespace ({routes}): another test network is up"
    return None


@dataclass
class Host:
    """One namespace on the segment: its name, its address, and how to run a command in it."""

    name: str
    namespace: str
    address: str

    def launcher(self) -> list[str]:
        """The prefix that runs a command inside this host's namespace (it execs: same pid)."""
        return ["ip", "netns", "exec", self.namespace]

    def pids(self) -> list[int]:
        """Every process running in this namespace now."""
        listed = _ip("netns", "pids", self.namespace, check=False).stdout.split()
        return [int(pid) for pid in listed if pid.isdigit()]

    def kill_everything(self) -> list[int]:
        """SIGKILL every process in the namespace (a host lost at once); returns their pids."""
        killed = self.pids()
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return killed


@dataclass
class Network:
    """The switch, the hosts on it and the test process's own end of the segment."""

    tag: str = field(default_factory=lambda: str(os.getpid()))
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def switch(self) -> str:
        return f"mh{self.tag}-switch"

    @property
    def client_link(self) -> str:
        return f"mh{self.tag}"[:15]

    def create(self, names: Sequence[str]) -> None:
        """The switch, the client's veth (CLIENT_ADDRESS) and one host per name (.10, .11, ...)."""
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "name", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        _ip("link", "add", "name", self.client_link, "type", "veth", "peer", "name", "client", "netns", self.switch)
        self._plug("client")
        _ip("addr", "add", f"{CLIENT_ADDRESS}/{SUBNET.prefixlen}", "dev", self.client_link)
        _ip("link", "set", self.client_link, "up")
        for n, name in enumerate(names):
            host = Host(name, f"mh{self.tag}-{name}", str(SUBNET.network_address + 10 + n))
            _ip("netns", "add", host.namespace)
            self.hosts[name] = host
            veth = ["link", "add", "name", name, "type", "veth", "peer", "name", "eth0", "netns", host.namespace]
            _ip("-n", self.switch, *veth)
            self._plug(name)
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/{SUBNET.prefixlen}", "dev", "eth0")
            _ip("-n", host.namespace, "link", "set", "eth0", "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")

    def _plug(self, port: str) -> None:
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")

    def remove(self) -> None:
        """Kill what still runs in the hosts (by pid), delete the namespaces and the client's veth."""
        for host in self.hosts.values():
            host.kill_everything()
        deadline = time.monotonic() + 10
        while any(host.pids() for host in self.hosts.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for namespace in [*(host.namespace for host in self.hosts.values()), self.switch]:
            _ip("netns", "delete", namespace, check=False)
        _ip("link", "delete", self.client_link, check=False)  # gone with its peer already, normally
        self.hosts.clear()
