"""The key-value store's snapshot encoding: deterministic, versioned, checksummed.

Layout::

    MAGIC (8 bytes, b"RAFTKVS2") | sha256(body) (32 bytes) | body
    body  = head chunk*                       (a sequence of CBOR items)
    head  = [version, last_applied_index, max_sessions, key count, session rows, leases]
    chunk = [key, value, create_revision, mod_revision, lease, key, ...]
            (at most CHUNK_KEYS keys; cut sooner past CHUNK_BYTES of values)
    leases = [[lease id, ttl_s], ...]         (in grant order)

Version 2 (before revisions and leases) had no leases in its head and chunks of
``[key, value, ...]``; it is still read, each key taking the snapshot's index as both its
revisions, so a member upgraded over an old snapshot starts with the same state as its peers.

Deterministic without sorting: keys go in the store's insertion order, which is itself a
function of the log (every member applies the same commands in the same order, and a store
restored from a snapshot gets the snapshot's order), so equal stores give equal bytes.
Sorting a million keys would hold the interpreter for about a second.

Cheap to take, slow to encode, and the slow part off the consensus loop: ``capture`` copies
the dict and the session rows (a C-level copy, milliseconds at 100k keys), and ``encode``,
meant for a worker thread, builds the body in chunks, each one short C call, so the
interpreter switches back to the loop between them instead of being held for the whole
store. A chunk is cut by bytes as well as by keys: a chunk of many large values was one
call long enough for the loop, starved, to miss heartbeats and lose its leadership.
``decode`` checks the magic, the checksum, the version and every field before a byte of it
is trusted.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import cbor2

MAGIC: Final = b"RAFTKVS2"
VERSION: Final = 3
DIGEST_BYTES: Final = 32
CHUNK_KEYS: Final = 4096
CHUNK_BYTES: Final = 1024 * 1024
# Formats this code recognises but will not read.
OLD_VERSIONS: Final = {1: "version 1 (unchecksummed, never written to disk by a member)"}


class SnapshotFormatError(ValueError):
    """The bytes are not a snapshot this code can trust; the message says why."""


class Stored(NamedTuple):
    """A key's value and history: revisions are the indexes of the entries that created and
    last modified it; ``lease`` 0 means none."""

    value: str
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class Capture:
    """A copy of a store's state, taken in the loop; ``encode`` turns it into bytes."""

    last_applied_index: int
    max_sessions: int
    data: dict[str, Stored]
    session_rows: list[list[object]]
    leases: list[list[int]]


@dataclass(frozen=True, slots=True)
class Decoded:
    last_applied_index: int
    max_sessions: int
    data: dict[str, Stored]
    session_rows: list[Any]
    leases: list[tuple[int, int]]


def encode(capture: Capture) -> bytes:
    head = cbor2.dumps(
        [
            VERSION,
            capture.last_applied_index,
            capture.max_sessions,
            len(capture.data),
            capture.session_rows,
            capture.leases,
        ],
        canonical=True,
    )
    chunks = [head]
    flat: list[object] = []
    keys = size = 0
    for key, stored in capture.data.items():
        flat.append(key)
        flat.extend(stored)
        keys += 1
        size += len(stored.value)
        if keys == CHUNK_KEYS or size >= CHUNK_BYTES:
            chunks.append(cbor2.dumps(flat))
            flat, keys, size = [], 0, 0
    if flat:
        chunks.append(cbor2.dumps(flat))
    body = b"".join(chunks)
    return MAGIC + hashlib.sha256(body).digest() + body


def decode(data: bytes) -> Decoded:
    if len(data) < len(MAGIC) + DIGEST_BYTES or not data.startswith(MAGIC):
        raise SnapshotFormatError("not a raftd key-value snapshot (wrong magic)")
    start = len(MAGIC) + DIGEST_BYTES
    body = memoryview(data)[start:]
    if hashlib.sha256(body).digest() != data[len(MAGIC) : start]:
        raise SnapshotFormatError("the snapshot's checksum does not match: damaged or truncated")
    stream = io.BytesIO(body)
    decoder = cbor2.CBORDecoder(stream)
    head = _item(decoder, "head")
    if type(head) is not list or not head or type(head[0]) is not int:
        raise SnapshotFormatError("the snapshot head is malformed")
    version = head[0]
    if version not in (2, VERSION):
        known = OLD_VERSIONS.get(version, f"version {version}")
        raise SnapshotFormatError(f"snapshot {known} cannot be read by this version of raftd")
    if len(head) != (5 if version == 2 else 6):
        raise SnapshotFormatError("the snapshot head is malformed")
    last_applied, max_sessions, count, rows = head[1:5]
    leases = _leases(head[5]) if version == VERSION else []
    if type(last_applied) is not int or last_applied < 0:
        raise SnapshotFormatError("last_applied_index must be a non-negative integer")
    if type(max_sessions) is not int or max_sessions < 1:
        raise SnapshotFormatError("max_sessions must be a positive integer")
    if type(count) is not int or count < 0:
        raise SnapshotFormatError("the key count must be a non-negative integer")
    if type(rows) is not list or len(rows) > max_sessions:
        raise SnapshotFormatError("sessions must be a list within max_sessions")
    width = 2 if version == 2 else 5
    store: dict[str, Stored] = {}
    read = 0
    while read < count:
        flat = _item(decoder, "chunk")
        if (
            type(flat) is not list
            or not flat
            or len(flat) % width
            or len(flat) > width * CHUNK_KEYS
        ):
            raise SnapshotFormatError("a snapshot chunk is malformed")
        for position in range(0, len(flat), width):
            key, value = flat[position], flat[position + 1]
            if width == 2:
                revisions = (last_applied, last_applied, 0)
            else:
                revisions = tuple(flat[position + 2 : position + 5])
                if any(type(number) is not int or number < 0 for number in revisions):
                    raise SnapshotFormatError("snapshot revisions and leases must be integers")
            if type(key) is not str or type(value) is not str:
                raise SnapshotFormatError("snapshot data must map text to text")
            store[key] = Stored(value, *revisions)
        read += len(flat) // width
    if read != count or len(store) != count:
        raise SnapshotFormatError("the snapshot's key count does not match its keys")
    if stream.tell() != len(body):
        raise SnapshotFormatError("bytes follow the snapshot's last chunk")
    return Decoded(last_applied, max_sessions, store, rows, leases)


def _leases(rows: Any) -> list[tuple[int, int]]:
    if type(rows) is not list:
        raise SnapshotFormatError("the snapshot's leases must be a list")
    leases = []
    for row in rows:
        if (
            type(row) is not list
            or len(row) != 2
            or any(type(number) is not int or number < 1 for number in row)
        ):
            raise SnapshotFormatError(f"malformed snapshot lease {row!r}")
        leases.append((row[0], row[1]))
    return leases


def _item(decoder: cbor2.CBORDecoder, what: str) -> Any:
    try:
        return decoder.decode()
    except Exception as exc:  # cbor2 raises several types for bad input; all mean damage
        raise SnapshotFormatError(f"the snapshot's {what} is not CBOR: {exc}") from exc
