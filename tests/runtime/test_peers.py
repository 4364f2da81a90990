"""The peer sender survives a message it cannot frame (issue 11: one oversized
AppendEntries escaped the sender task and took the whole member down)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from observability.metrics import RaftMetrics
from raftd.config import NodeConfig, parse_address
from raftd.core import AppendEntries, Entry, Heartbeat, Message
from raftd.runtime.peers import Outgoing, PeerTransport
from wire.api import PEER_REGISTRY
from wire.stream import FramedStream
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
    send, receive = trio.open_memory_channel[Outgoing](8)
    huge = AppendEntries(1, 1, 2, 0, 0, (Entry(1, 1, b"x" * 10_000),), 0)
    for msg in (huge, Heartbeat(1, 1, 2, 0), Heartbeat(1, 1, 2, 7)):
        send.send_nowait(Outgoing(msg, None, None, 0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport._pump, sender, receive)
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
