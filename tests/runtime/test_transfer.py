"""Snapshots over the peer link: chunks out, reassembly and the checksum in, and heartbeats
that never wait behind a big transfer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio
import trio.testing

from observability.metrics import RaftMetrics
from raftd.config import NodeConfig, parse_address
from raftd.core import (
    AppendEntries,
    Entry,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    Message,
    Snapshot,
    SnapshotMeta,
)
from raftd.runtime.peers import Outbox, Outgoing, PeerTransport
from raftd.runtime.transfer import (
    CHUNK_BYTES,
    MAX_SNAPSHOT_BYTES,
    Reassembly,
    SnapshotTransferError,
    chunks,
    digest_of,
)
from wire.api import PEER_REGISTRY, Hello, SnapshotChunk
from wire.codec import Header
from wire.stream import FramedStream
from wire.tracecontext import TraceParent

DATA = bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 1000)  # a bit over three chunks
INSTALL = InstallSnapshot(4, 1, 2, Snapshot(SnapshotMeta(900, 3, (1, 2, 3)), DATA))


def test_a_snapshot_goes_out_in_chunks_and_comes_back_whole() -> None:
    pieces = list(chunks(INSTALL, digest_of(DATA)))
    assert len(pieces) == 4 and all(len(p.data) <= CHUNK_BYTES for p in pieces)
    reassembly = Reassembly()
    done = [reassembly.add(p) for p in pieces]
    assert done[:3] == [None, None, None]
    completed = done[3]
    assert completed is not None and completed.chunks == 4
    assert completed.verify() == INSTALL


def test_an_empty_snapshot_is_one_chunk() -> None:
    empty = InstallSnapshot(1, 1, 2, Snapshot(SnapshotMeta(5, 1, (1, 2)), b""))
    (only,) = chunks(empty, digest_of(b""))
    completed = Reassembly().add(only)
    assert completed is not None and completed.verify() == empty


def test_a_chunk_out_of_order_or_a_damaged_snapshot_is_refused() -> None:
    pieces = list(chunks(INSTALL, digest_of(DATA)))
    with pytest.raises(SnapshotTransferError, match="does not follow"):
        Reassembly().add(pieces[1])
    reassembly = Reassembly()
    reassembly.add(pieces[0])
    with pytest.raises(SnapshotTransferError, match="does not follow"):
        reassembly.add(pieces[2])
    wrong = list(chunks(INSTALL, digest_of(b"something else")))
    reassembly = Reassembly()
    completed = [reassembly.add(p) for p in wrong][-1]
    assert completed is not None
    with pytest.raises(SnapshotTransferError, match="fails its checksum"):
        completed.verify()
    huge = dataclasses.replace(pieces[0], total_bytes=MAX_SNAPSHOT_BYTES + 1)
    with pytest.raises(SnapshotTransferError, match="refused"):
        Reassembly().add(huge)


def _pair(tmp_path: Path) -> tuple[PeerTransport, PeerTransport, list[Message], RaftMetrics]:
    members = {name: parse_address(f"127.0.0.1:{port}") for name, port in (("a", 1), ("b", 2))}
    delivered: list[Message] = []

    def deliver(msg: Message, parent: TraceParent | None, built: float, f: float | None) -> None:
        delivered.append(msg)

    metrics = RaftMetrics()
    a = PeerTransport(NodeConfig("a", members, parse_address("127.0.0.1:3"), tmp_path), deliver, {})
    b_config = NodeConfig("b", members, parse_address("127.0.0.1:4"), tmp_path)
    b = PeerTransport(b_config, deliver, {}, metrics=metrics)
    return a, b, delivered, metrics


async def test_heartbeats_pass_between_the_chunks_of_a_big_snapshot(tmp_path: Path) -> None:
    a, b, delivered, metrics = _pair(tmp_path)
    ours, theirs = trio.testing.memory_stream_pair()
    sender = FramedStream(ours, PEER_REGISTRY)
    receiver = FramedStream(theirs, PEER_REGISTRY)
    outbox = Outbox(64)
    outbox.put(Outgoing(INSTALL, None, None, 0))
    for n in range(3):
        outbox.put(Outgoing(Heartbeat(4, 1, 2, n), None, None, 0))
    async with trio.open_nursery() as nursery:
        await sender.send(Header("Hello"), Hello("raftd", "a", "127.0.0.1:3"))
        nursery.start_soon(b._receive_from_peer, receiver, "test")
        nursery.start_soon(a._pump, sender, outbox)
        with trio.fail_after(10):
            while INSTALL not in delivered:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    # The three heartbeats queued behind the snapshot were delivered before its last chunk.
    assert delivered[-1] == INSTALL
    assert [m for m in delivered if isinstance(m, Heartbeat)] == [
        Heartbeat(4, 1, 2, n) for n in range(3)
    ]
    received = metrics.registry.get_sample_value("raftd_snapshots_total", {"kind": "received"})
    assert received == 1


async def test_a_transfer_cut_short_is_counted_and_the_next_one_starts_afresh(
    tmp_path: Path,
) -> None:
    _, b, delivered, metrics = _pair(tmp_path)
    pieces = list(chunks(INSTALL, digest_of(DATA)))

    async def connection(frames: list[SnapshotChunk]) -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        sender = FramedStream(ours, PEER_REGISTRY)
        await sender.send(Header("Hello"), Hello("raftd", "a", "127.0.0.1:3"))
        for frame in frames:
            await sender.send(Header("SnapshotChunk"), frame)
        await sender.aclose()
        with trio.fail_after(10):
            await b._receive_from_peer(FramedStream(theirs, PEER_REGISTRY), "test")

    await connection(pieces[:2])
    assert delivered == []
    cut = {"side": "receiver"}
    assert metrics.registry.get_sample_value("raftd_snapshot_transfers_cut_total", cut) == 1
    await connection(pieces)
    assert delivered == [INSTALL]
    assert metrics.registry.get_sample_value("raftd_snapshot_transfers_cut_total", cut) == 1


async def test_a_configuration_the_core_could_not_read_closes_the_connection(
    tmp_path: Path,
) -> None:
    _, b, delivered, metrics = _pair(tmp_path)
    ours, theirs = trio.testing.memory_stream_pair()
    sender = FramedStream(ours, PEER_REGISTRY)
    await sender.send(Header("Hello"), Hello("raftd", "a", "127.0.0.1:3"))
    junk = Entry(1, 1, b"not a configuration", EntryKind.CONFIG)
    await sender.send(Header("AppendEntries"), AppendEntries(1, 1, 2, 0, 0, (junk,), 0))
    bad_chunk = dataclasses.replace(next(chunks(INSTALL, digest_of(DATA))), config=b"[1]")
    await sender.send(Header("SnapshotChunk"), bad_chunk)
    with trio.fail_after(10):
        await b._receive_from_peer(FramedStream(theirs, PEER_REGISTRY), "test")
    assert delivered == []
    closed = {"port": "peer", "reason": "bad_frame"}
    assert (
        metrics.registry.get_sample_value("raftd_connections_closed_by_member_total", closed) == 1
    )
    with pytest.raises(SnapshotTransferError, match="configuration"):
        Reassembly().add(bad_chunk)
