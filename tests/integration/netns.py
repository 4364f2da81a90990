"""Members on hosts of their own: one network namespace per member, joined by a bridge.

The proxies of the 127.0.0.1 harness cut messages above TCP; here faults happen where a
real network fails. Each member gets its own address (10.201.N.i) on a veth pair whose
other end is on a bridge in the test's namespace, which also has an address on it, so
the tests and the nemesis reach every member's client port as they would another
machine's. Faults:

- ``isolate``: the member's link goes down (nothing in or out, clients included; open
  TCP connections are not told, they stall and retransmit, as across a dead switch port);
- ``cut_one_way(src, dst)``: dst's firewall drops what src sends to its peer port, which
  is exactly src's messages to dst (each member sends over the connection it dialled;
  dst's messages to src, and src's TCP acknowledgements of them, still pass);
- ``kill``: as on 127.0.0.1 (``ip netns exec`` execs the member, so it is the process).

Needs root, ``ip`` (iproute2) and ``iptables``; ``unavailable()`` says why not, for a
skip with a reason.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import trio

from tests.integration.harness import Cluster, Member

CLIENT_PORT, PEER_PORT = 7001, 7101
_counter = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def unavailable() -> str | None:
    """Why members cannot get hosts of their own here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test installs iptables as root)"
    probe = f"raftd-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"ip netns add failed: {getattr(exc, 'stderr', b'') or exc!r}"
    try:
        subprocess.run(
            ["ip", "netns", "exec", probe, "iptables", "-L", "INPUT", "-n"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"iptables does not work in a namespace: {getattr(exc, 'stderr', b'') or exc!r}"
    finally:
        _ip("netns", "del", probe)
    return None


class NetnsCluster(Cluster):
    """A ``Cluster`` whose members are hosts: same API, real addresses, network faults."""

    def __init__(
        self, base: Path, size: int = 3, *, tick_ms: int = 50, tls: bool | None = None
    ) -> None:
        number = next(_counter)
        self.tag = f"{os.getpid() % 10_000}{number}"
        self.subnet = f"10.201.{(os.getpid() + number) % 250 + 1}"
        addresses = [f"{self.subnet}.{i}" for i in range(1, size + 1)]
        super().__init__(base, size, tick_ms=tick_ms, tls=tls, cert_hosts=addresses)
        for i, member in enumerate(self.members.values(), start=1):
            member.host = f"{self.subnet}.{i}"
            member.client_port, member.peer_port = CLIENT_PORT, PEER_PORT
        self.links = {}  # no proxies: the network itself is cut
        self.bridge = f"rfb{self.tag}"
        self._up = False

    def namespace(self, name: str) -> str:
        return f"raftd-{self.tag}-{name}"

    def peers_of(self, name: str) -> str:
        return ",".join(f"{other}={m.peer_addr}" for other, m in self.members.items())

    def launcher(self, name: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(name)]

    async def start(self, nursery: trio.Nursery) -> None:
        self.create_hosts()
        for name in self.members:
            await self.start_member(name)

    async def start_member(self, name: str) -> None:
        self.create_hosts()
        await super().start_member(name)

    async def add_member(self, name: str, nursery: trio.Nursery) -> Member:
        raise NotImplementedError("a netns cluster has a fixed set of hosts")

    def create_hosts(self) -> None:
        if self._up:
            return
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (name, member) in enumerate(self.members.items(), start=1):
            ns, veth = self.namespace(name), f"rfv{self.tag}{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{member.host}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        self._up = True

    def remove_hosts(self) -> None:
        if not self._up:
            return
        for name in self.members:
            subprocess.run(["ip", "netns", "del", self.namespace(name)], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        self._up = False

    async def shutdown(self) -> None:
        await super().shutdown()
        self.remove_hosts()

    # ----------------------------------------------------------- partitions

    async def isolate(self, name: str) -> None:
        _ip("-n", self.namespace(name), "link", "set", "eth0", "down")

    async def cut_one_way(self, src: str, dst: str) -> None:
        rule = ["-A", "INPUT", "-s", self.members[src].host, "-p", "tcp"]
        rule += ["--dport", str(PEER_PORT), "-j", "DROP"]
        await trio.to_thread.run_sync(self._firewall, dst, rule)

    def heal(self) -> None:
        for name in self.members:
            _ip("-n", self.namespace(name), "link", "set", "eth0", "up")
            self._firewall(name, ["-F", "INPUT"])

    def _firewall(self, name: str, rule: list[str]) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.namespace(name), "iptables", *rule],
            check=True,
            capture_output=True,
            timeout=30,
        )
