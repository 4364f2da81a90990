"""The peer sender survives a message it cannot frame (one oversized
AppendEntries escaped the sender task and took the whole member down)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import trio
import trio.testing

from observability.metrics import RaftMetrics
from raftd.config import NodeConfig, parse_address
from raftd.core import AppendEntries, Entry, Heartbeat, Message
from raftd.runtime.peers import Outbox, Outgoing, PeerTransport
from tests.wire.test_raw_socket import tcp_pair
from tests.wire.test_turn_writes import CountingStream
from wire.api import PEER_REGISTRY, Hello
from wire.codec import Header
from wire.stream import FramedStream, TurnWrites
from wire.tracecontext import TraceParent


def _transport(tmp_path: Path, metrics: RaftMetrics) -> PeerTransport:
    members = {name: parse_address(f"127.0.0.1:{port}") for name, port in (("a", 1), ("b", 2))}
    config = NodeConfig("a", members, parse_address("127.0.0.1:3"), tmp_path)

    def ignore(msg: Message, parent: TraceParent | None, built: float, fresh: float | None) -> None:
        pass

    return PeerTransport(config, ignore, {}, metrics=metrics)


async def test_an_unframeable_message_is_dropped_and_the_next_ones_still_go(
    tmp_path: Path,
) -> None:
    metrics = RaftMetrics()
    transport = _transport(tmp_path, metrics)
    ours, theirs = trio.testing.memory_stream_pair()
    sender = FramedStream(ours, PEER_REGISTRY, max_frame_bytes=4096)
    receiver = FramedStream(theirs, PEER_REGISTRY, max_frame_bytes=4096)
    outbox = Outbox(8)
    huge = AppendEntries(1, 1, 2, 0, 0, (Entry(1, 1, b"x" * 10_000),), 0)
    for msg in (huge, Heartbeat(1, 1, 2, 0), Heartbeat(1, 1, 2, 7)):
        outbox.put(Outgoing(msg, None, None, 0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport._pump, sender, outbox)
        received = [await receiver.receive() for _ in range(2)]
        assert None not in received
        nursery.cancel_scope.cancel()
    assert [got[1] for got in received if got is not None] == [
        Heartbeat(1, 1, 2, 0),
        Heartbeat(1, 1, 2, 7),
    ]
    dropped = metrics.registry.get_sample_value(
        "raftd_messages_dropped_total", {"kind": "AppendEntries", "reason": "unencodable"}
    )
    assert dropped == 1


class FakeBudget:
    """The member's trace budget as the transport sees it (``TraceRoom``)."""

    def __init__(self, room: int) -> None:
        self._room = room
        self.reports: list[tuple[int, int]] = []

    def room(self) -> int:
        return self._room

    def peer_reported(self, peer: int, room: int, age_s: float) -> None:
        assert age_s >= 0
        self.reports.append((peer, room))


async def test_every_frame_tells_the_peer_our_trace_room_and_theirs_reaches_the_budget(
    tmp_path: Path,
) -> None:
    ours_budget, theirs_budget = FakeBudget(7), FakeBudget(3)
    members = {name: parse_address(f"127.0.0.1:{port}") for name, port in (("a", 1), ("b", 2))}
    a_config = NodeConfig("a", members, parse_address("127.0.0.1:3"), tmp_path)
    b_config = NodeConfig("b", members, parse_address("127.0.0.1:4"), tmp_path)
    delivered: list[Message] = []

    def deliver(msg: Message, parent: TraceParent | None, built: float, f: float | None) -> None:
        delivered.append(msg)

    a = PeerTransport(a_config, deliver, {}, trace_room=ours_budget)
    b = PeerTransport(b_config, deliver, {}, trace_room=theirs_budget)
    a_end, b_end = trio.testing.memory_stream_pair()
    sender = FramedStream(a_end, PEER_REGISTRY)
    receiver = FramedStream(b_end, PEER_REGISTRY)
    a_id, b_id = a_config.node_id, b_config.node_id
    outbox = Outbox(8)
    outbox.put(Outgoing(Heartbeat(1, a_id, b_id, 0), None, None, 0))
    async with trio.open_nursery() as nursery:
        await sender.send(Header("Hello"), Hello(a_config.cluster_id, "a", "127.0.0.1:3"))
        nursery.start_soon(b._receive_from_peer, receiver, "test")
        nursery.start_soon(a._pump, sender, outbox)
        with trio.fail_after(5):
            while not delivered:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert delivered == [Heartbeat(1, a_id, b_id, 0)]
    assert theirs_budget.reports == [(a_id, 7)]


class MovingName(trio.abc.HostnameResolver):
    """A resolver under which one host name moves to another address, as a rescheduled
    pod's DNS name does; every other name resolves as usual."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.asked = 0

    async def getaddrinfo(
        self, host: bytes | None, port: bytes | str | int | None, *args: Any
    ) -> list[Any]:
        target: bytes | str | None = host
        if host is not None and host.decode() == self.name:
            self.asked += 1
            target = self.address
        return await trio.to_thread.run_sync(socket.getaddrinfo, target, port, *args)

    async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        return await trio.to_thread.run_sync(socket.getnameinfo, sockaddr, flags)


async def test_a_peer_known_by_name_is_resolved_again_when_its_address_changes(
    tmp_path: Path,
) -> None:
    """--cluster names hosts, not addresses: each reconnection resolves the name anew, so
    a member whose address changed (a rescheduled pod) is found at its new one."""
    old, new = await trio.open_tcp_listeners(0, host="127.0.0.1"), None
    port = old[0].socket.getsockname()[1]
    new = await trio.open_tcp_listeners(port, host="127.0.0.2")
    resolver = MovingName("b.raftd.test", "127.0.0.1")
    members = {"a": parse_address("127.0.0.1:1"), "b": parse_address(f"b.raftd.test:{port}")}
    config = NodeConfig("a", members, parse_address("127.0.0.1:3"), tmp_path)
    transport = PeerTransport(config, lambda *args: None, {})
    hellos: list[str] = []

    async def hello_then_close(listener: trio.SocketListener, where: str) -> None:
        tcp = await listener.accept()
        received = await FramedStream(tcp, PEER_REGISTRY).receive()
        assert received is not None and isinstance(received[1], Hello)
        hellos.append(where)
        await tcp.aclose()

    previous = trio.socket.set_custom_hostname_resolver(resolver)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(transport.run)
            with trio.fail_after(10):
                await hello_then_close(old[0], "old address")
                resolver.address = "127.0.0.2"  # the pod moved
                await hello_then_close(new[0], "new address")
            nursery.cancel_scope.cancel()
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
        for listener in (*old, *new):
            await listener.aclose()
    assert hellos == ["old address", "new address"] and resolver.asked >= 2


async def test_the_loop_writes_an_idle_senders_messages_itself_at_its_flush(
    tmp_path: Path,
) -> None:
    """In the loop's turn a message is not handed to the sender task: the loop writes it
    at its flush, with whatever else it queued for that peer, in one write."""
    members = {name: parse_address(f"127.0.0.1:{port}") for name, port in (("a", 1), ("b", 2))}
    config = NodeConfig("a", members, parse_address("127.0.0.1:3"), tmp_path)
    turn = TurnWrites()
    transport = PeerTransport(config, lambda *_: None, {}, turn=turn)
    left, right = await tcp_pair()
    ours, theirs = CountingStream(left, PEER_REGISTRY), FramedStream(right, PEER_REGISTRY)
    b_id = config.node_ids["b"]
    outbox = Outbox()
    transport._outboxes[b_id] = outbox
    beats = [Heartbeat(1, config.node_id, b_id, n) for n in range(3)]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport._pump, ours, outbox)
            await trio.testing.wait_all_tasks_blocked()
            turn.open()
            for beat in beats:
                transport.send(beat)
            assert len(outbox.items) == 3  # nothing written before the flush
            turn.close()
            assert not outbox.items
            got = [await theirs.receive() for _ in beats]
            nursery.cancel_scope.cancel()
    assert [item[1] for item in got if item is not None] == beats
    assert ours.task_writes == 0


async def test_bytes_a_broken_link_left_unsent_are_never_sent_on_the_next(
    tmp_path: Path,
) -> None:
    """The rest of a frame the loop began to write belongs to that connection only: on a
    new one it would be garbage in front of the next frame."""
    metrics = RaftMetrics()
    transport = _transport(tmp_path, metrics)
    ours, _ = trio.testing.memory_stream_pair()
    outbox = Outbox()
    outbox.pending = (b"\x00\x00\x01", [Outgoing(Heartbeat(1, 1, 2, 0), None, None, 0)])
    with trio.CancelScope() as scope:
        scope.cancel()  # the link is gone before the sender could write the rest
        await transport._pump(FramedStream(ours, PEER_REGISTRY), outbox)
    assert outbox.pending is None
    dropped = metrics.registry.get_sample_value(
        "raftd_messages_dropped_total", {"kind": "Heartbeat", "reason": "send_failed"}
    )
    assert dropped == 1
