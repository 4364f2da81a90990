"""Snapshot files: one snapshot (its metadata and the state machine's bytes) per file.

Layout (big-endian)::

    b"RAFTSNP1" | meta length u32 | meta | data length u64 | data | sha256(all before) 32 bytes
    meta = CBOR [index, term, [voter, ...], cluster id, configuration entry data]
           (files written before membership changes have no fifth item: none, the
           configuration the cluster was bootstrapped with)

Named ``snap-<index>-<term>.snap`` (20 digits each), so the newest sorts last. A file is
written whole under a temporary name, fsynced, renamed and its directory fsynced
(``FileSystem.create``): a crash leaves either the whole file or none of it, and the
checksum catches what the disk damages afterwards. The cluster id keeps a snapshot of one
cluster out of another's data directory (a backup restored into the wrong place).
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from raftd.core.types import Snapshot, SnapshotMeta

MAGIC: Final = b"RAFTSNP1"
SUFFIX: Final = ".snap"
_NAME = re.compile(r"snap-(\d{20})-(\d{20})\.snap")
_META_LENGTH = struct.Struct(">I")
_DATA_LENGTH = struct.Struct(">Q")
_DIGEST_BYTES = 32
MAX_META_BYTES = 1 << 20


class SnapshotFileError(ValueError):
    """A snapshot file that cannot be trusted; the message says why."""


def file_name(meta: SnapshotMeta) -> str:
    return f"snap-{meta.index:020d}-{meta.term:020d}{SUFFIX}"


def parse_name(name: str) -> tuple[int, int] | None:
    """(index, term) from a snapshot file's name, or None for any other file."""
    match = _NAME.fullmatch(name)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    snapshot: Snapshot
    cluster_id: str


def encode(snapshot: Snapshot, cluster_id: str) -> bytes:
    meta = snapshot.meta
    meta_bytes = cbor2.dumps([meta.index, meta.term, list(meta.voters), cluster_id, meta.config])
    head = MAGIC + _META_LENGTH.pack(len(meta_bytes)) + meta_bytes
    body = head + _DATA_LENGTH.pack(len(snapshot.data)) + snapshot.data
    return body + hashlib.sha256(body).digest()


def decode(content: bytes, *, name: str = "snapshot") -> SnapshotFile:
    if not content.startswith(MAGIC):
        raise SnapshotFileError(f"{name} is not a raftd snapshot file (wrong magic)")
    if len(content) < len(MAGIC) + _META_LENGTH.size + _DATA_LENGTH.size + _DIGEST_BYTES:
        raise SnapshotFileError(f"{name} is too short to be a snapshot: truncated")
    body, digest = content[:-_DIGEST_BYTES], content[-_DIGEST_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotFileError(f"{name} fails its checksum: damaged or truncated")
    at = len(MAGIC)
    (meta_length,) = _META_LENGTH.unpack_from(body, at)
    at += _META_LENGTH.size
    if meta_length > MAX_META_BYTES or at + meta_length + _DATA_LENGTH.size > len(body):
        raise SnapshotFileError(f"{name} has a malformed header")
    meta, cluster_id = _meta(body[at : at + meta_length], name)
    at += meta_length
    (data_length,) = _DATA_LENGTH.unpack_from(body, at)
    at += _DATA_LENGTH.size
    if at + data_length != len(body):
        raise SnapshotFileError(f"{name} says it holds {data_length} bytes of state, not so")
    return SnapshotFile(Snapshot(meta, bytes(body[at:])), cluster_id)


def _meta(raw: bytes, name: str) -> tuple[SnapshotMeta, str]:
    try:
        item: Any = cbor2.loads(raw)
    except Exception as exc:  # several cbor2 error types; all mean a bad header
        raise SnapshotFileError(f"{name} has a header that is not CBOR: {exc}") from exc
    if (
        type(item) is not list
        or len(item) not in (4, 5)
        or type(item[0]) is not int
        or type(item[1]) is not int
        or item[0] < 0
        or item[1] < 0
        or type(item[2]) is not list
        or not all(type(v) is int and v >= 0 for v in item[2])
        or type(item[3]) is not str
        or (len(item) == 5 and type(item[4]) is not bytes)
    ):
        raise SnapshotFileError(f"{name} has a malformed header {item!r}")
    config = item[4] if len(item) == 5 else b""
    return SnapshotMeta(item[0], item[1], tuple(item[2]), config), item[3]
