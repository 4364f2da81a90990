"""The bounds a member keeps against clients and strangers that misbehave on purpose.

A bad traceparent costs the trace, not the request; half a frame left hanging is closed
after --frame-timeout; a connection flood is refused at the door with a reply saying so;
and after all of it the member's memory is where it was and every write it acknowledged
is still there. Each kind of trouble leaves a log line and a metric.
"""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import cbor2
import pytest
import trio

from tests.integration.harness import Cluster, metric, running
from tests.integration.test_hostile_input import HOSTILE, send_raw
from wire.api import (
    CLIENT_REGISTRY,
    ErrorCode,
    ErrorReply,
    GetReply,
    GetRequest,
    SetRequest,
    WriteReply,
)
from wire.codec import Header
from wire.frame import encode_frame
from wire.stream import FramedStream

FRAME_TIMEOUT_S = 0.5
CONNECTION_LIMIT = 12


@pytest.fixture
async def guarded(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, 3, tls=False)  # raw bytes on the ports
    for member in c.members.values():
        member.extra_args += [
            "--frame-timeout",
            str(FRAME_TIMEOUT_S),
            "--max-client-connections",
            str(CONNECTION_LIMIT),
        ]
    c.serve_metrics()
    async with running(c, nursery) as started:
        yield started


async def exchange_raw(port: int, payload: object) -> object:
    """One hand-built request (any header we like) and its decoded reply."""
    with trio.fail_after(10):
        stream = FramedStream(await trio.open_tcp_stream("127.0.0.1", port), CLIENT_REGISTRY)
        try:
            await stream.send_encoded([encode_frame(cbor2.dumps(payload))])
            received = await stream.receive()
        finally:
            await stream.aclose()
    assert received is not None
    return received[1]


async def wait_for_log(cluster: Cluster, name: str, text: str) -> None:
    with trio.fail_after(15):
        while text not in cluster.log_text(name):
            await trio.sleep(0.05)


async def test_a_bad_traceparent_is_dropped_counted_and_the_request_served(
    guarded: Cluster,
) -> None:
    leader = await guarded.wait_for_leader()
    port = guarded.members[leader].client_port
    for bad in ("garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", 42):
        head = {"v": 1, "k": "SetRequest", "id": 7, "tp": bad}
        reply = await exchange_raw(port, [head, ["traced", "v", "bad-tp", 1, False, 0]])
        assert isinstance(reply, WriteReply) and reply.ok, reply  # seq 1 again: deduplicated
    head = {"v": 1, "k": "GetRequest", "id": 8, "tp": "not-a-trace"}
    reply = await exchange_raw(port, [head, ["traced", None, False]])
    assert isinstance(reply, GetReply) and reply.value == "v"
    text = await guarded.scrape(leader)
    assert metric(text, 'raftd_bad_traceparents_total{port="client"}') == 4
    log = guarded.log_text(leader)
    assert log.count("invalid traceparent") == 1  # the repeats are counted, not logged


async def test_half_a_frame_is_closed_after_the_frame_timeout(guarded: Cluster) -> None:
    leader = await guarded.wait_for_leader()
    member = guarded.members[leader]
    for port in (member.client_port, member.peer_port):
        with trio.fail_after(10 * FRAME_TIMEOUT_S + 10):
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            await tcp.send_all(struct.pack(">I", 100) + b"only part")
            # No EOF: the stalled sender keeps the socket open; the member must close it.
            assert await tcp.receive_some(1024) == b""
            await tcp.aclose()
    await wait_for_log(guarded, leader, "client connection closed: frame_timeout")
    await wait_for_log(guarded, leader, "frame not completed in time")
    text = await guarded.scrape(leader)
    closed = 'raftd_connections_closed_by_member_total{port="%s",reason="frame_timeout"}'
    assert metric(text, closed % "client") == 1
    assert metric(text, closed % "peer") == 1
    # A client that is merely idle between frames is not a stalled one.
    stream = FramedStream(
        await trio.open_tcp_stream("127.0.0.1", member.client_port), CLIENT_REGISTRY
    )
    await trio.sleep(3 * FRAME_TIMEOUT_S)  # idling is the point of this step
    await stream.send(Header("GetRequest", 1), GetRequest("nothing"))
    with trio.fail_after(10):
        received = await stream.receive()
    assert received is not None and isinstance(received[1], ErrorReply | GetReply)
    await stream.aclose()


async def test_connections_beyond_the_limit_are_refused_with_a_reason(guarded: Cluster) -> None:
    leader = await guarded.wait_for_leader()
    port = guarded.members[leader].client_port
    held: list[FramedStream] = []
    try:
        # Status requests make sure each connection has been accepted before the next.
        for i in range(CONNECTION_LIMIT):
            stream = FramedStream(await trio.open_tcp_stream("127.0.0.1", port), CLIENT_REGISTRY)
            held.append(stream)
            await stream.send(Header("SetRequest", 1), SetRequest(f"held{i}", "v", f"h{i}", 1))
            with trio.fail_after(10):
                received = await stream.receive()
            assert received is not None and isinstance(received[1], WriteReply)
        for _ in range(3):
            extra = FramedStream(await trio.open_tcp_stream("127.0.0.1", port), CLIENT_REGISTRY)
            with trio.fail_after(10):
                refusal = await extra.receive()
                assert await extra.receive() is None  # and then closed
            await extra.aclose()
            assert refusal is not None
            header, reply = refusal
            assert header.request_id == 0
            assert isinstance(reply, ErrorReply) and reply.code == ErrorCode.UNAVAILABLE
            assert reply.definite and "too many client connections (limit 12)" in reply.message
        # The connections already in are served as before.
        await held[0].send(Header("GetRequest", 2), GetRequest("held0"))
        with trio.fail_after(10):
            received = await held[0].receive()
        assert received is not None
        assert isinstance(received[1], GetReply) and received[1].value == "v"
    finally:
        for stream in held:
            await stream.aclose()
    # Once they are gone (the member notices the closes in its own time), there is room.
    refused = 'raftd_connections_closed_by_member_total{port="client",reason="limit"}'
    with trio.fail_after(15):
        while metric(await guarded.scrape(leader), 'raftd_open_connections{port="client"}'):
            await trio.sleep(0.05)
    reply = await guarded.request(leader, GetRequest("held1"))
    assert isinstance(reply, GetReply) and reply.value == "v"
    assert metric(await guarded.scrape(leader), refused) == 3
    assert guarded.log_text(leader).count("too many connections") == 1


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_barrage_leaves_memory_bounded_and_acknowledged_writes_intact(
    guarded: Cluster,
) -> None:
    leader = await guarded.wait_for_leader()
    member = guarded.members[leader]
    acknowledged = {}
    for i in range(50):
        reply = await guarded.request(leader, SetRequest(f"kept{i}", f"value{i}", "barrage", i + 1))
        assert isinstance(reply, WriteReply) and reply.ok
        acknowledged[f"kept{i}"] = f"value{i}"
    assert member.process is not None
    before = resident_kib(member.process.pid)
    # Ten rounds of every hostile shape on both ports, plus connections that announce the
    # largest frame allowed and send a megabyte of it before stalling (closed on timeout).
    for _ in range(10):
        for data in HOSTILE.values():
            await send_raw(member.client_port, data)
            await send_raw(member.peer_port, data)

    async def stall_with_a_big_frame_begun(port: int) -> None:
        with trio.fail_after(30):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(struct.pack(">I", 8 * 1024 * 1024) + os.urandom(1 << 20))
            while await stream.receive_some(1024):
                pass
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(CONNECTION_LIMIT - 2):
            nursery.start_soon(stall_with_a_big_frame_begun, member.client_port)
    after = resident_kib(member.process.pid)
    # Ten megabytes were held at once for a moment; what matters is that none of it stayed.
    assert after - before < 24 * 1024, (before, after)
    assert await guarded.wait_for_leader() == leader
    for key, value in acknowledged.items():
        reply = await guarded.request(leader, GetRequest(key))
        assert isinstance(reply, GetReply) and reply.value == value, key


async def test_pipelined_requests_reusing_one_id_are_all_answered(guarded: Cluster) -> None:
    """Request ids are the client's business: reusing one must not upset the member."""
    leader = await guarded.wait_for_leader()
    tcp = await trio.open_tcp_stream("127.0.0.1", guarded.members[leader].client_port)
    stream = FramedStream(tcp, CLIENT_REGISTRY)
    frames = [
        stream.encode(Header("SetRequest", 5), SetRequest(f"same-id{i}", "v", f"dup{i}", 1))
        for i in range(20)
    ]
    await stream.send_encoded(frames)
    with trio.fail_after(15):
        replies = [await stream.receive() for _ in frames]
    await stream.aclose()
    assert all(r is not None and r[0].request_id == 5 for r in replies)
    # Served as writes, unless leadership moved meanwhile (a busy CI machine): then an
    # honest redirect. Either way the member that got them is still running (the old
    # limiter keyed by request id took it down).
    moved = (ErrorCode.NOT_LEADER, ErrorCode.NO_LEADER, ErrorCode.LEADERSHIP_LOST)
    for r in replies:
        assert r is not None
        reply = r[1]
        assert (isinstance(reply, WriteReply) and reply.ok) or (
            isinstance(reply, ErrorReply) and reply.code in moved
        ), reply
    process = guarded.members[leader].process
    assert process is not None and process.returncode is None
    await guarded.wait_all_serving()
