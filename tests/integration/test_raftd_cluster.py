"""`raftd cluster`: the embedded default that `make demo` runs."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.integration.harness import ROOT
from wire.api import CLIENT_REGISTRY, StatusReply, StatusRequest
from wire.codec import Header
from wire.stream import FramedStream


def free_offset() -> int:
    """A port offset at which all of the cluster's ports are free."""
    for offset in range(21000, 40000, 300):
        ports = [base + offset + i for base in (7000, 7100, 9100) for i in (1, 2, 3)]
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return offset
    raise AssertionError("no free port range")


async def status(port: int) -> StatusReply | None:
    try:
        with trio.fail_after(1):
            stream = FramedStream(await trio.open_tcp_stream("127.0.0.1", port), CLIENT_REGISTRY)
            await stream.send(Header("StatusRequest", 1), StatusRequest())
            received = await stream.receive()
            await stream.aclose()
    except (OSError, trio.TooSlowError, trio.BrokenResourceError):
        return None
    return received[1] if received and isinstance(received[1], StatusReply) else None


@asynccontextmanager
async def raftd_cluster(log_path: Path, *args: str) -> AsyncIterator[None]:
    """``raftd cluster ARGS``, its output in ``log_path``; Ctrl-C at the end of the block
    must stop it cleanly."""
    with log_path.open("wb") as out:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "raftd", "cluster", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            yield
            process.send_signal(signal.SIGINT)
            with trio.fail_after(20):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()


async def test_raftd_cluster_runs_members_merges_logs_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    offset = free_offset()
    log_path = tmp_path / "cluster.out"
    data = str(tmp_path / "data")
    async with raftd_cluster(log_path, "--data-dir", data, "--port-offset", str(offset)):
        with trio.fail_after(30):
            while True:
                replies = [await status(7000 + offset + i) for i in (1, 2, 3)]
                roles = sorted(r.role for r in replies if r is not None)
                if roles == ["follower", "follower", "leader"]:
                    break
                await trio.sleep(0.1)
    output = log_path.read_text()
    assert f"127.0.0.1:{7001 + offset}" in output  # the endpoint table
    for name in ("n1", "n2", "n3"):
        assert f"{name} | " in output  # each member's lines, prefixed
        assert (tmp_path / "data" / name / "wal-00000001.log").exists()  # kept for the next start
    assert "became leader" in output
    assert "stopped cleanly" in output


async def test_raftd_cluster_tls_makes_certificates_and_its_demo_speaks_tls(
    tmp_path: Path,
) -> None:
    offset = free_offset()
    log_path = tmp_path / "cluster.out"
    data = tmp_path / "data"
    args = ("--data-dir", str(data), "--port-offset", str(offset), "--tls", "--demo")
    async with raftd_cluster(log_path, *args):
        with trio.fail_after(60):
            while "the cluster keeps running" not in log_path.read_text():
                await trio.sleep(0.1)
        # A plaintext client is turned away: the ports really are TLS.
        assert await status(7001 + offset) is None
    output = log_path.read_text()
    assert f"--cacert {data / 'tls' / 'ca.pem'}" in output  # how to reach it, printed
    assert "$ raftctl set greeting hello\nOK\n(exit status 0)" in output
    assert "$ raftctl get greeting\nhello\n(exit status 0)" in output
    assert "peers: mutual TLS; clients: TLS, client certificates required" in output
    for name in ("n1", "n2", "n3", "client", "ca"):
        assert (data / "tls" / f"{name}.pem").exists()
