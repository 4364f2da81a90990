"""Real raftd processes on 127.0.0.1, with every peer link behind a proxy the test controls.

Peer connections carry messages one way (each member dials every other for its own
outgoing messages), so a proxy per directed link (src -> dst) can cut exactly the messages
from src to dst: symmetric partitions cut both directions, one-way partitions one. Members
are separate processes, so kill -9 and SIGSTOP are the real thing.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import trio

from cli.client import open_stream
from raftd import certs
from wire.api import ClientReply, StatusReply, StatusRequest
from wire.codec import Header
from wire.tls import TlsFailure, TlsFiles, client_context

ROOT = Path(__file__).resolve().parents[2]
# RAFTD_TEST_TLS=1 runs every cluster whose test does not choose (tls=None) with mutual TLS
# on both ports: `make test-tls` runs the integration suite and the nemesis that way.
TLS_BY_DEFAULT = os.environ.get("RAFTD_TEST_TLS", "") not in ("", "0")


# Every port this test process has handed out. The kernel picks bind(0) ports at random,
# so twelve calls for one cluster repeat a port about once in 200 clusters (measured): a
# member then fails to bind a port its own proxy holds, and the cluster never serves.
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, never one handed out before by this process."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class LinkProxy:
    """Forwards one directed peer link; ``blocked`` drops it like a partition would."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.blocked = False
        self._streams: set[trio.SocketStream] = set()
        self._cut_after: int | None = None

    def cut_after(self, nbytes: int) -> None:
        """Close the link's connections once ``nbytes`` more have gone through it towards
        its target, once; later connections pass (a connection lost mid-transfer)."""
        self._cut_after = nbytes

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        task_status.started()
        await trio.serve_listeners(self._serve, listeners)

    async def block(self) -> None:
        self.blocked = True
        for stream in list(self._streams):
            await stream.aclose()

    async def _serve(self, inbound: trio.SocketStream) -> None:
        if self.blocked:
            await inbound.aclose()
            return
        try:
            outbound = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await inbound.aclose()
            return
        self._streams |= {inbound, outbound}
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pipe, inbound, outbound, nursery.cancel_scope, True)
                nursery.start_soon(self._pipe, outbound, inbound, nursery.cancel_scope, False)
        finally:
            self._streams -= {inbound, outbound}
            for stream in (inbound, outbound):
                await stream.aclose()

    async def _pipe(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        scope: trio.CancelScope,
        towards_target: bool,
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                if self.blocked:
                    break
                if towards_target and self._cut_after is not None:
                    if len(data) >= self._cut_after:
                        self._cut_after = None
                        break
                    self._cut_after -= len(data)
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: trio.Process | None = None
    log_file: IO[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"  # its own address in netns mode (tests/integration/netns.py)

    @property
    def client_addr(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def peer_addr(self) -> str:
        return f"{self.host}:{self.peer_port}"


class Cluster:
    def __init__(
        self,
        base: Path,
        size: int = 3,
        *,
        tick_ms: int = 50,
        tls: bool | None = None,
        cert_hosts: Sequence[str] = (),
    ) -> None:
        """``tls``: mutual TLS on every port, certificates from ``raftd certs`` in
        ``base/tls`` (None: as RAFTD_TEST_TLS says), naming ``cert_hosts`` too."""
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.tick_ms = tick_ms
        self.members: dict[str, Member] = {}
        for i in range(1, size + 1):
            name = f"n{i}"
            self.members[name] = Member(
                name, free_port(), free_port(), base / name, base / f"{name}.log"
            )
        self.tls_dir: Path | None = None
        self.client_tls: ssl.SSLContext | None = None
        self.cert_hosts = [*certs.DEFAULT_HOSTS, *cert_hosts]
        if TLS_BY_DEFAULT if tls is None else tls:
            self.tls_dir = base / "tls"
            certs.write_bundle(self.tls_dir, list(self.members), hosts=self.cert_hosts)
            self.client_tls = client_context(self.client_files)
        self.links: dict[tuple[str, str], LinkProxy] = {
            (src, dst): LinkProxy(self.members[dst].peer_port)
            for src in self.members
            for dst in self.members
            if src != dst
        }

    @property
    def endpoints(self) -> list[str]:
        return [m.client_addr for m in self.members.values()]

    @property
    def client_files(self) -> TlsFiles:
        """raftctl's CA, certificate and key (the cluster must have TLS)."""
        assert self.tls_dir is not None, "this cluster runs without TLS"
        d = self.tls_dir
        return TlsFiles(d / "client.pem", d / "client-key.pem", d / certs.CA_CERT)

    @property
    def raftctl_env(self) -> dict[str, str]:
        """What a raftctl subprocess needs in its environment to reach the members."""
        if self.tls_dir is None:
            return {}
        files = self.client_files
        return {
            "RAFTCTL_CACERT": str(files.ca),
            "RAFTCTL_CERT": str(files.cert),
            "RAFTCTL_KEY": str(files.key),
        }

    def tls_args(self, name: str) -> list[str]:
        """A member's TLS flags: its own certificate on both ports, client certificates
        required."""
        if self.tls_dir is None:
            return []
        d = self.tls_dir
        if not (d / f"{name}.pem").exists():  # a member added later
            certs.write_bundle(d, [name], hosts=self.cert_hosts)
        cert, key, ca = str(d / f"{name}.pem"), str(d / f"{name}-key.pem"), str(d / certs.CA_CERT)
        return [
            *("--peer-cert", cert, "--peer-key", key, "--peer-ca", ca),
            *("--client-cert", cert, "--client-key", key, "--client-ca", ca),
        ]

    def peers_of(self, name: str) -> str:
        """``--cluster`` for ``name``: it sees the others through its outgoing links'
        proxies."""
        return ",".join(
            f"{other}=127.0.0.1:{m.peer_port if other == name else self.links[(name, other)].port}"
            for other, m in self.members.items()
        )

    def command(self, name: str) -> list[str]:
        cluster = self.peers_of(name)
        member = self.members[name]
        return [
            sys.executable,
            "-m",
            "raftd",
            "run",
            "--id",
            name,
            "--cluster",
            cluster,
            "--client-addr",
            member.client_addr,
            "--data-dir",
            str(member.data_dir),
            "--tick-ms",
            str(self.tick_ms),
            *self.tls_args(name),
            *member.extra_args,
        ]

    async def start(self, nursery: trio.Nursery) -> None:
        for proxy in self.links.values():
            await nursery.start(proxy.run)
        for name in self.members:
            await self.start_member(name)

    async def add_member(self, name: str, nursery: trio.Nursery) -> Member:
        """A member-to-be of a running cluster (start it after raftctl member add; it runs
        with --join): its ports, and proxied links to and from every member."""
        member = Member(name, free_port(), free_port(), self.base / name, self.base / f"{name}.log")
        member.extra_args.append("--join")
        if any("--metrics-addr" in m.extra_args for m in self.members.values()):
            member.extra_args += ["--metrics-addr", f"127.0.0.1:{free_port()}"]
        for other in list(self.members):
            self.links[(name, other)] = LinkProxy(self.members[other].peer_port)
            self.links[(other, name)] = LinkProxy(member.peer_port)
            for link in ((name, other), (other, name)):
                await nursery.start(self.links[link].run)
        self.members[name] = member
        return member

    async def start_member(self, name: str) -> None:
        member = self.members[name]
        member.log_file = member.log_path.open("ab")
        member.process = await trio.lowlevel.open_process(
            self.launcher(name) + self.command(name),
            stdout=member.log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **member.env},
        )

    def launcher(self, name: str) -> list[str]:
        """What runs a member's command on its host (nothing: this one)."""
        return []

    async def kill(self, name: str) -> None:
        """kill -9: no chance to flush or say goodbye."""
        member = self.members[name]
        assert member.process is not None
        member.process.kill()
        await member.process.wait()
        member.process = None
        if member.log_file is not None:
            member.log_file.close()

    async def stop(self, name: str) -> int:
        member = self.members[name]
        assert member.process is not None
        member.process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            status = await member.process.wait()
        member.process = None
        if member.log_file is not None:
            member.log_file.close()
        return status

    async def wait_exit(self, name: str, timeout_s: float) -> int | None:
        """Wait for a member to stop on its own (None: it did not in time, and runs on)."""
        member = self.members[name]
        assert member.process is not None
        with trio.move_on_after(timeout_s):
            status = await member.process.wait()
            member.process = None
            if member.log_file is not None:
                member.log_file.close()
            return status
        return None

    async def wait_applied(self, name: str, index: int, timeout_s: float = 60) -> float:
        """Wait until ``name`` has applied ``index``; returns the seconds it took."""
        started = time.monotonic()
        with trio.fail_after(timeout_s):
            while True:
                statuses = await self.statuses([name])
                if name in statuses and statuses[name].last_applied >= index:
                    return time.monotonic() - started
                await trio.sleep(0.02)

    def pause(self, name: str) -> None:
        process = self.members[name].process
        assert process is not None
        process.send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        process = self.members[name].process
        assert process is not None
        process.send_signal(signal.SIGCONT)

    async def shutdown(self) -> None:
        """Kill every member, even from a cancelled scope (a test that failed or timed out):
        the signals go out first, without awaiting anything, and the waits are shielded,
        so no member is left running as an orphan."""
        running = [(name, m) for name, m in self.members.items() if m.process is not None]
        for name, _ in running:
            self.resume(name)
        for _, member in running:
            assert member.process is not None
            member.process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            for _, member in running:
                assert member.process is not None
                await member.process.wait()
                member.process = None
                if member.log_file is not None:
                    member.log_file.close()

    # ----------------------------------------------------------- partitions

    async def isolate(self, name: str) -> None:
        for (src, dst), proxy in self.links.items():
            if name in (src, dst):
                await proxy.block()

    async def cut_one_way(self, src: str, dst: str) -> None:
        await self.links[(src, dst)].block()

    def heal(self) -> None:
        for proxy in self.links.values():
            proxy.blocked = False

    # -------------------------------------------------------------- clients

    async def request(self, name: str, request: object, timeout_s: float = 5.0) -> ClientReply:
        member = self.members[name]
        with trio.fail_after(timeout_s):
            stream = await open_stream(member.client_addr, self.client_tls)
            try:
                await stream.send(Header(type(request).__name__, 1), request)
                received = await stream.receive()
            finally:
                await stream.aclose()
        assert received is not None, f"{name} closed the connection"
        reply: ClientReply = received[1]
        return reply

    async def statuses(self, names: Iterable[str] | None = None) -> dict[str, StatusReply]:
        found: dict[str, StatusReply] = {}
        for name in names or self.members:
            if self.members[name].process is None:
                continue
            try:
                reply = await self.request(name, StatusRequest(), timeout_s=1.0)
            except (
                OSError,
                trio.TooSlowError,
                trio.BrokenResourceError,
                TlsFailure,
                AssertionError,
            ):
                continue
            if isinstance(reply, StatusReply):
                found[name] = reply
        return found

    async def wait_for_leader(
        self, among: Iterable[str] | None = None, timeout_s: float = 15.0
    ) -> str:
        """The member that leads, as the members of ``among`` agree, in the highest term."""
        group = list(among or self.members)
        with trio.fail_after(timeout_s):
            while True:
                statuses = await self.statuses(group)
                leaders = {s.node for s in statuses.values() if s.role == "leader"}
                if len(leaders) == 1 and statuses:
                    (leader,) = leaders
                    top = max(s.term for s in statuses.values())
                    if statuses[leader].term == top:
                        return leader
                await trio.sleep(0.05)

    async def wait_all_serving(self, timeout_s: float = 15.0) -> None:
        """Every running member answers status and knows the same leader.

        On timeout it says what it last saw and which members had exited, so a failure in
        CI (where only the test's output survives) names its cause."""
        running = [n for n, m in self.members.items() if m.process is not None]
        statuses: dict[str, StatusReply] = {}
        try:
            with trio.fail_after(timeout_s):
                while True:
                    statuses = await self.statuses(running)
                    leaders = {s.leader for s in statuses.values()}
                    if len(statuses) == len(running) and len(leaders) == 1 and None not in leaders:
                        return
                    await trio.sleep(0.05)
        except trio.TooSlowError:
            raise AssertionError(self._not_serving(running, statuses, timeout_s)) from None

    def _not_serving(self, running: list[str], statuses: dict[str, StatusReply], t: float) -> str:
        lines = [f"the cluster did not serve within {t} s; last statuses:"]
        for name in running:
            status = statuses.get(name)
            process = self.members[name].process
            exited = None if process is None else process.returncode
            seen = (
                "no answer"
                if status is None
                else (f"{status.role}, term {status.term}, leader {status.leader}")
            )
            lines.append(f"  {name}: {seen}" + ("" if exited is None else f"; exited {exited}"))
            if status is None or exited is not None:
                tail = self.log_text(name).splitlines()[-5:]
                lines += [f"    | {line}" for line in tail]
        return "\n".join(lines)

    def log_text(self, name: str) -> str:
        return self.members[name].log_path.read_text(errors="replace")

    def serve_metrics(self) -> None:
        """Give every member a /metrics port (before ``start``); ``scrape`` reads it."""
        for member in self.members.values():
            member.extra_args += ["--metrics-addr", f"127.0.0.1:{free_port()}"]

    def metrics_address(self, name: str) -> str:
        args = self.members[name].extra_args
        return args[args.index("--metrics-addr") + 1]

    async def scrape(self, name: str) -> str:
        status, text = await self.probe(name, "/metrics")
        assert status == 200, f"{name} /metrics: {status} {text}"
        return text

    async def probe(self, name: str, path: str) -> tuple[int, str]:
        """GET ``path`` on a member's metrics port (/metrics, /health, /ready): the status
        and the body, a 503 included."""
        address = self.metrics_address(name)

        def get() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, error.read().decode()

        return await trio.to_thread.run_sync(get)


def metric(text: str, line_start: str) -> float:
    """The value of the first sample in a Prometheus exposition whose line starts so."""
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {line_start}")


C = TypeVar("C", bound=Cluster)


@asynccontextmanager
async def running(cluster: C, nursery: trio.Nursery, *, timeout_s: float = 30) -> AsyncIterator[C]:
    """Start every member, wait until all serve and agree on a leader, stop them after."""
    await cluster.start(nursery)
    try:
        await cluster.wait_all_serving(timeout_s=timeout_s)
        yield cluster
    finally:
        await cluster.shutdown()
