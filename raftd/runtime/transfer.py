"""Moving a snapshot between members: chunks out, reassembly and a checksum in.

The core hands the transport an ``InstallSnapshot`` holding the whole snapshot; it goes on
the wire as ``SnapshotChunk`` frames of at most ``CHUNK_BYTES``, one per write, with the
peer's other messages sent between them, so a transfer of any size neither blocks the
follower's heartbeats nor comes near the frame limit (and the socket's own backpressure is
the flow control). The receiver puts the chunks back together in order and hands the core
an ``InstallSnapshot`` only once the whole data matches the digest the chunks carry.

A dropped connection abandons a transfer on both sides; the leader's core sends the
snapshot again when it goes unanswered (``raftd.core.node.SNAPSHOT_RETRY_TIMEOUTS``), and the
transfer restarts from its first chunk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from raftd.core import InstallSnapshot, MembershipError, Snapshot, SnapshotMeta
from raftd.runtime.roster import check_configuration
from wire.api import SnapshotChunk
from wire.frame import WireError

CHUNK_BYTES = 1024 * 1024
# A snapshot larger than this is refused on arrival: a hostile or broken peer cannot make a
# member buffer without end. Far above any store raftd can hold in memory anyway.
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024 * 1024
DIGEST_BYTES = 32


class SnapshotTransferError(WireError):
    """Chunks that do not make a snapshot: out of order, too large, or failing the digest."""


def digest_of(data: bytes) -> bytes:
    """The sha256 chunks carry (hashlib lets other threads run while it hashes)."""
    return hashlib.sha256(data).digest()


def chunks(msg: InstallSnapshot, digest: bytes) -> Iterator[SnapshotChunk]:
    meta = msg.snapshot.meta
    data = msg.snapshot.data
    total = len(data)
    offset = 0
    while True:
        piece = data[offset : offset + CHUNK_BYTES]
        yield SnapshotChunk(
            msg.term, msg.src, msg.dst, meta.index, meta.term, meta.voters,
            total, offset, digest, piece, meta.config,
        )  # fmt: skip
        offset += len(piece)
        if offset >= total:
            return


@dataclass
class Reassembly:
    """One connection's snapshot in the making (a peer sends one at a time)."""

    key: tuple[int, int, int, bytes] | None = None  # term, index, snapshot term, digest
    parts: list[bytes] = field(default_factory=list)
    received: int = 0
    chunks: int = 0

    def add(self, chunk: SnapshotChunk) -> Completed | None:
        """Take one chunk; the whole snapshot (not yet checked: ``verify``) once the last
        one is in."""
        if not 0 <= chunk.total_bytes <= MAX_SNAPSHOT_BYTES:
            raise SnapshotTransferError(f"a snapshot of {chunk.total_bytes} bytes is refused")
        if len(chunk.digest) != DIGEST_BYTES or len(chunk.data) > CHUNK_BYTES:
            raise SnapshotTransferError("a snapshot chunk is malformed")
        key = (chunk.term, chunk.index, chunk.snapshot_term, chunk.digest)
        if chunk.offset == 0 and chunk.config:
            try:
                check_configuration(chunk.config)
            except MembershipError as exc:
                raise SnapshotTransferError(f"the snapshot's configuration: {exc}") from exc
        if chunk.offset == 0:
            self.key, self.parts, self.received, self.chunks = key, [], 0, 0
        elif key != self.key or chunk.offset != self.received:
            raise SnapshotTransferError(
                f"snapshot chunk at {chunk.offset} does not follow the {self.received} bytes "
                "received"
            )
        self.parts.append(chunk.data)
        self.received += len(chunk.data)
        self.chunks += 1
        if self.received > chunk.total_bytes:
            raise SnapshotTransferError("snapshot chunks run past the size they announced")
        if self.received < chunk.total_bytes:
            return None
        data = b"".join(self.parts)
        count = self.chunks
        self.key, self.parts, self.received, self.chunks = None, [], 0, 0
        meta = SnapshotMeta(chunk.index, chunk.snapshot_term, chunk.voters, chunk.config)
        msg = InstallSnapshot(chunk.term, chunk.src, chunk.dst, Snapshot(meta, data))
        return Completed(msg, count, chunk.digest)


@dataclass(frozen=True, slots=True)
class Completed:
    msg: InstallSnapshot
    chunks: int
    digest: bytes

    def verify(self) -> InstallSnapshot:
        """The snapshot, if its data matches the digest (run off the loop: it hashes it all)."""
        if digest_of(self.msg.snapshot.data) != self.digest:
            raise SnapshotTransferError(
                f"the snapshot at {self.msg.snapshot.meta.index} fails its checksum after transfer"
            )
        return self.msg
