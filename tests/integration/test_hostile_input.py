"""Bad bytes and strangers on both ports close their own connection and nothing else."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
import trio

from tests.integration.harness import ROOT, Cluster, free_port
from wire.api import PEER_REGISTRY, Hello, SetRequest, WriteReply
from wire.codec import Header, encode_payload
from wire.frame import encode_frame
from wire.stream import FramedStream


@pytest.fixture
def cluster(plaintext_cluster: Cluster) -> Cluster:
    """These tests write raw bytes to the ports: plaintext whatever RAFTD_TEST_TLS says."""
    return plaintext_cluster


async def send_raw(port: int, data: bytes) -> bytes:
    """Send bytes, then read until the server closes the connection (it must)."""
    received = b""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            await stream.send_all(data)
            await stream.send_eof()  # a frame cut short must be noticed, not waited for
            while chunk := await stream.receive_some(65536):
                received += chunk
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()
    return received


def frame(payload: object) -> bytes:
    return encode_frame(cbor2.dumps(payload))


HOSTILE = {
    "garbage": b"\x00\xff" * 1000,
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "oversized length": struct.pack(">I", 0xFFFFFFF0) + b"x" * 100,
    "not cbor": encode_frame(b"\xff\xfe\xfd"),
    "cbor but not a message": frame({"hello": "world"}),
    "wrong version": frame([{"v": 9, "k": "StatusRequest", "id": 1}, []]),
    "unknown kind": frame([{"v": 1, "k": "Reboot", "id": 1}, []]),
    "wrong field types": frame([{"v": 1, "k": "SetRequest", "id": 1}, [1, 2, 3, 4, 5]]),
    "truncated frame": struct.pack(">I", 100) + b"abc",
}


async def test_hostile_bytes_on_both_ports_leave_the_cluster_healthy(cluster: Cluster) -> None:
    await cluster.wait_all_serving()
    leader = await cluster.wait_for_leader()
    for name, member in cluster.members.items():
        for data in HOSTILE.values():
            await send_raw(member.client_port, data)
            await send_raw(member.peer_port, data)
        assert cluster.members[name].process is not None
    reply = await cluster.request(leader, SetRequest("k", "v", "c", 1))
    assert isinstance(reply, WriteReply) and reply.ok
    assert await cluster.wait_for_leader() == leader  # no member restarted, no new election
    logs = "".join(cluster.log_text(n) for n in cluster.members)
    assert "client connection closed" in logs and "bad frame" in logs
    assert "peer connection refused" in logs


async def hello_then_close(port: int, hello: Hello) -> bytes:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = FramedStream(tcp, PEER_REGISTRY)
    await stream.send(Header("Hello"), hello)
    data = b""
    with trio.fail_after(10):
        try:
            while chunk := await tcp.receive_some(4096):
                data += chunk
        except trio.BrokenResourceError:
            pass
    await stream.aclose()
    return data


async def test_strangers_are_refused_by_the_peer_port(cluster: Cluster) -> None:
    leader = await cluster.wait_for_leader()
    port = cluster.members[leader].peer_port
    await hello_then_close(port, Hello("another-cluster", "n2", "127.0.0.1:1"))
    await hello_then_close(port, Hello("raftd", "intruder", "127.0.0.1:1"))
    await hello_then_close(port, Hello("raftd", leader, "127.0.0.1:1"))  # itself
    log = cluster.log_text(leader)
    assert "cluster id 'another-cluster' is not ours" in log
    assert "'intruder' is not a peer" in log
    # A valid peer's Hello followed by a message claiming another sender is refused too.
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = FramedStream(tcp, PEER_REGISTRY)
    other = next(n for n in cluster.members if n != leader)
    await stream.send(Header("Hello"), Hello("raftd", other, "127.0.0.1:1"))
    forged = encode_frame(
        encode_payload(Header("HeartbeatResponse"), [1, 99, 1, 0, 0])  # src 99: not the sender
    )
    await stream.send_encoded([forged])
    with trio.fail_after(10):
        while "misaddressed HeartbeatResponse" not in cluster.log_text(leader):
            await trio.sleep(0.05)
    await stream.aclose()
    assert await cluster.wait_for_leader() == leader


def run_raftd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftd", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def member_args(data_dir: Path, *, port: int | None = None) -> list[str]:
    port = port or free_port()
    return [
        "run",
        "--id",
        "n1",
        "--cluster",
        f"n1=127.0.0.1:{port}",
        "--client-addr",
        f"127.0.0.1:{free_port()}",
        "--data-dir",
        str(data_dir),
    ]


def test_configuration_mistakes_exit_2_with_a_message(tmp_path: Path) -> None:
    cases = {
        ("run",): "missing --id, --cluster, --client-addr, --data-dir",
        ("run", "--id", "n9", "--cluster", "n1=127.0.0.1:1", "--client-addr", "127.0.0.1:2",
         "--data-dir", str(tmp_path)): "--id 'n9' is not in --cluster",
        ("run", "--id", "n1", "--cluster", "n1=localhost", "--client-addr", "127.0.0.1:2",
         "--data-dir", str(tmp_path)): "must look like HOST:PORT",
        ("run", "--id", "n1", "--cluster", "n1=127.0.0.1:1", "--client-addr", "127.0.0.1:x",
         "--data-dir", str(tmp_path)): "the port must be a number",
        ("run", "--frame-timeout", "0"): "argument --frame-timeout: must be positive",
        ("run", "--max-client-connections", "many"): "--max-client-connections: not a number",
        ("run", "--tick-ms", "-5"): "argument --tick-ms: must be positive",
    }  # fmt: skip
    for args, message in cases.items():
        result = run_raftd(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_environment_variables_configure_a_member(tmp_path: Path) -> None:
    env_result = subprocess.run(
        [sys.executable, "-m", "raftd", "run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        env={
            **os.environ,
            "RAFTD_ID": "n1",
            "RAFTD_CLUSTER": "n1=127.0.0.1:1",
            "RAFTD_CLIENT_ADDR": "bad",
            "RAFTD_DATA_DIR": str(tmp_path),
        },
    )
    # Every flag came from the environment; the bad one is reported as such.
    assert env_result.returncode == 2
    assert "--client-addr 'bad' must look like HOST:PORT" in env_result.stderr


def test_a_corrupt_log_refuses_to_start_and_a_locked_data_dir_is_refused(
    tmp_path: Path,
) -> None:
    from raftd.core import Entry, HardState
    from raftd.storage import WalStorage

    with WalStorage.open(tmp_path) as storage:
        storage.set_hard_state(HardState(3, 1))
        storage.append([Entry(i, 3, b"x" * 20) for i in range(1, 5)])
        storage.sync()
        locked = run_raftd(*member_args(tmp_path))
        assert locked.returncode == 2 and "in use" in locked.stderr
    wal = tmp_path / "wal-00000001.log"
    data = bytearray(wal.read_bytes())
    data[60] ^= 0xFF  # inside the first record: not a torn tail
    wal.write_bytes(bytes(data))
    corrupt = run_raftd(*member_args(tmp_path))
    assert corrupt.returncode == 1
    assert "untouched" in corrupt.stderr and "Traceback" not in corrupt.stderr
    assert wal.read_bytes() == bytes(data)


@pytest.mark.parametrize("what", ["peers", "clients", "metrics"])
def test_a_port_in_use_is_named_and_the_member_exits_1(tmp_path: Path, what: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        args = member_args(tmp_path, port=taken if what == "peers" else None)
        if what == "clients":
            args[args.index("--client-addr") + 1] = f"127.0.0.1:{taken}"
        if what == "metrics":
            args += ["--metrics-addr", f"127.0.0.1:{taken}"]
        result = run_raftd(*args)
    assert result.returncode == 1, result.stderr
    expected = f"raftd: cannot listen for {what} on 127.0.0.1:{taken}: Address already in use"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and "Trio nursery" not in result.stderr


def test_versions_and_an_ignored_sampler_variable_are_reported(tmp_path: Path) -> None:
    from raftd import version

    assert run_raftd("--version").stdout == f"raftd {version()}\n"
    with socket.socket() as holder:  # the member then stops at once, after its warnings
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "raftd", *member_args(tmp_path, port=taken)],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
            env={**os.environ, "OTEL_TRACES_SAMPLER": "always_on"},
        )  # fmt: skip
    assert result.returncode == 1
    warning = next(line for line in result.stdout.splitlines() + result.stderr.splitlines()
                   if "OTEL_TRACES_SAMPLER is set but ignored" in line)  # fmt: skip
    assert "RAFTD_TRACE_SAMPLE_RATIO" in warning and "always_on" in warning
