"""Hosts made of Linux network namespaces, for tests that run the service on several machines.

Each host is a network namespace with one interface (``eth0``) and an address in
198.18.0.0/24, part of 198.18.0.0/15, the range set aside for benchmarking (RFC 2544), so
it can never meet a real network. The hosts' links end on one bridge inside a namespace of
its own (the switch), so the machine's own network is never touched: no interface,
address or route is added outside the namespaces. IPv6 is switched off in every
namespace, so no link-local address appears either. Cutting a host's link is
``ip link set eth0 down`` inside its namespace.

Needs root and iproute2; ``namespaces_unavailable`` says why they cannot be made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.support.stack import Service

# 198.18.0.0/15 is reserved for benchmark tests (RFC 2544): never routed anywhere real.
SUBNET_PREFIX = "198.18.0"
PREFIX_LENGTH = 24


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _no_ipv6(namespace: str) -> None:
    for scope in ("all", "default"):
        subprocess.run(
            ["ip", "netns", "exec", namespace, "sysctl", "-qw",
             f"net.ipv6.conf.{scope}.disable_ipv6=1"],
            capture_output=True, check=False,
        )  # fmt: skip


def namespaces_unavailable() -> str | None:
    """Why network namespaces, veth pairs and a bridge cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2 (the ip command)"
    probe = f"whprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"cannot make a network namespace: {exc}"
    try:
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
        _ip("-n", probe, "link", "add", "va", "type", "veth", "peer", "name", "vb")
    except RuntimeError as exc:
        return f"cannot make a bridge or a veth pair in a namespace: {exc}"
    finally:
        with contextlib.suppress(RuntimeError):
            _ip("netns", "del", probe)
    return None


class Host:
    """One namespace with an address on the switch, and the processes started in it."""

    def __init__(self, network: Network, name: str, octet: int) -> None:
        self.network = network
        self.name = name
        self.namespace = f"{network.prefix}-{name}"
        self.address = f"{SUBNET_PREFIX}.{octet}"
        self.services: list[Service] = []

    def run(self, argv: list[str], *, env: dict[str, str], timeout: float = 120):
        """Run a command to completion inside this host."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv],
            env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def start(self, label: str, argv: list[str], *, env: dict[str, str]) -> Service:
        """Start a long-running process inside this host, its output in the network's logs."""
        log = self.network.workdir / f"{self.name}-{label}.log"
        service = Service(
            f"{self.name}/{label}", ["ip", "netns", "exec", self.namespace, *argv], env, log
        )
        self.services.append(service)
        return service

    def cut(self) -> None:
        """Take the host off the network: its link goes down, as a pulled cable."""
        _ip("-n", self.namespace, "link", "set", "eth0", "down")

    def restore(self) -> None:
        """Bring the host's link back up."""
        _ip("-n", self.namespace, "link", "set", "eth0", "up")


class Network:
    """A switch namespace with a bridge, and hosts joined to it; ``destroy`` removes all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # Short (interface names stay under 16 bytes) and unique per test process.
        self.prefix = f"wh{os.getpid()}"
        self.switch = f"{self.prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        try:
            self._add_namespace(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.destroy()
            raise

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _no_ipv6(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")

    def add_host(self, name: str, octet: int) -> Host:
        """A new host with address 198.18.0.<octet> on the switch."""
        host = Host(self, name, octet)
        self._add_namespace(host.namespace)
        port = f"v-{name}"[:15]
        _ip("-n", self.switch, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", host.namespace)  # fmt: skip
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/{PREFIX_LENGTH}", "dev", "eth0")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    def logs(self) -> str:
        """The tail of every process's log, for a failure's message."""
        parts = []
        for host in self.hosts.values():
            for service in host.services:
                parts.append(f"--- {service.name}\n{service.log_text()[-2000:]}")
        return "\n".join(parts)

    def destroy(self) -> None:
        """Stop every process started in the hosts, then remove every namespace."""
        # Last started first: workers before the Redis and PostgreSQL they use.
        for host in reversed(list(self.hosts.values())):
            for service in reversed(host.services):
                with contextlib.suppress(Exception):
                    service.stop(5)
        for namespace in reversed(self._namespaces):
            # Anything still running in the namespace was started by this network's hosts.
            pids = subprocess.run(
                ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", namespace)
        self._namespaces.clear()
