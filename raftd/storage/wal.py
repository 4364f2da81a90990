"""The write-ahead log and its snapshots: the durable Storage the daemon runs on.

The log is a series of segment files, ``wal-00000001.log``, ``wal-00000002.log``, ...; each
holds batches, one per ``sync``, so a single fsync makes a whole Ready durable at once (group
commit) and there is no moment where a vote is on disk but the entries it depended on are
not, or the reverse. Nothing is ever rewritten in place: a conflicting suffix is replaced by
appending records whose index is at or below the current last index, and replay truncates
the log there, exactly as ``append`` does in memory. When the newest segment outgrows
``segment_bytes``, and after each snapshot of this member's own, the next batch opens a new
one; once a durable snapshot covers every entry of a segment, ``compact`` deletes it. So a
restart replays about two snapshot intervals of entries, however long the history.
Snapshots live beside the log in ``snap-*.snap`` files (``raftd.storage.snapfile``): the
newest two are kept.

Layout (big-endian)::

    segment  b"RAFTWAL3" | number u64 | first batch seq u64 | crc32(the 16 bytes before) u32
             batch*
    batch    header body commit
    header   0xBA | seq u64 | body length u32 | crc32(body) u32 | crc32(the 17 bytes before) u32
    body     record+                      (what one sync() wrote: its hard state first)
    commit   0xC5                         (one byte, never zero: see below)
    record   type u8 | payload length u32 | crc32(type, length, payload) u32 | payload
    HARD_STATE payload: current_term u64 | voted_for i64 (-1 for None)
    ENTRY      payload: index u64 | term u64 | kind u8 | data
    TRACED_ENTRY payload: index u64 | term u64 | kind u8 | context length u8 | context | data
               (an entry proposed inside a sampled trace: context is its ASCII traceparent)
    BASE       payload: index u64 | term u64: the log ends at (index, term) before this
               segment; the first batch of every segment but the first holds it, with the
               hard state, so deleting the segments before loses neither
    RESET      payload: index u64 | term u64: an installed snapshot replaced the whole log,
               which now restarts after (index, term); its snapshot file was made durable
               before the batch was written

Why batches. Each ``sync`` writes one batch and fsyncs it before the next batch is written, so
at any crash at most one batch, the last of the last segment, holds bytes that were never
fsynced: only it can be torn, and only its loss is harmless (it was never acknowledged).
Damage anywhere else is corruption of acknowledged data. Seq numbers count batches from 1
across segments, so a whole, checksummed batch in the wrong place is caught too.

Why the torn-versus-corrupt rule looks at zeros (after etcd's ``isTornEntry``). A power cut
loses unsynced pages in any order: a lost page reads as its last synced content (zeros past
the old end of file), a torn page keeps a prefix of its new bytes, and the file length lands
anywhere between the synced and the written length. So a tear shows up in the last batch as
either an end of file before the batch is complete, or a first damaged byte followed by
zeros up to the end of its block (``FileSystem.tear_unit``, 512-byte sectors by default) or
the end of file. A bit flip leaves complete, non-zero bytes that fail their checksum. Every
record and the commit byte start or are non-zero, so a run of zeros cannot reach past a
damaged record into healthy bytes. The last batch is then judged like this:

* incomplete at end of file: torn; cut whole, with a warning;
* complete, with the first failing record (or header, or commit byte) ending in zeros up to
  its block's end and nothing written after the batch: torn; cut whole, with a warning;
* anything else: ``CorruptLogError`` naming the file and offset, the file left as found,
  because truncating would silently drop entries this node may have promised a leader.

What remains ambiguous, as for etcd: corruption that looks exactly like a tear (a block
suffix of zeros, or a bit flip in a record whose own bytes happen to be zero up to a block
boundary) is cut as torn. A torn batch is always cut whole: a prefix of it is never kept,
since the records after a lost page would follow a gap.

Format 2 (one file, ``raft.wal``) is migrated on open: replayed as before, written out as
the first segment, then removed.
"""

from __future__ import annotations

import itertools
import logging
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from raftd.core.types import DurableState, Entry, EntryKind, HardState, Snapshot
from raftd.storage import snapfile
from raftd.storage.base import StorageError
from raftd.storage.fs import LOCK_NAME, DataDirLocked, DirLock, FileSystem, OsFileSystem, WalFile

__all__ = [
    "LOCK_NAME",
    "MAGIC",
    "WAL_NAME",
    "CorruptLogError",
    "DataDirLocked",
    "WalStorage",
]

MAGIC = b"RAFTWAL3"
MAGIC_V2 = b"RAFTWAL2"  # format 2: one file, migrated to segments on open
# Formats this code recognises but will not read: refused with a message, never guessed at.
OLD_MAGICS = {b"RAFTWAL1": "format 1, whose recovery could not tell a torn batch from damage"}
WAL_NAME = "raft.wal"  # format 2's file
SEGMENT_PREFIX = "wal-"
SEGMENT_SUFFIX = ".log"
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
SNAPSHOTS_KEPT = 2
DEFAULT_CLUSTER_ID = "raftd"  # as NodeConfig's default

RECORD_HARD_STATE = 1
RECORD_ENTRY = 2
RECORD_TRACED_ENTRY = 3
RECORD_BASE = 4
RECORD_RESET = 5

BATCH_MARK = 0xBA
COMMIT_MARK = 0xC5

# A cap on one record, so a damaged length field cannot make recovery allocate or skip an
# absurd amount; an append bigger than this is refused up front instead of written.
MAX_RECORD_PAYLOAD = 64 * 1024 * 1024

_BATCH_HEAD = struct.Struct(">BQII")  # mark, seq, body length, crc32(body)
_HEADER_CRC = struct.Struct(">I")  # crc32 of the four fields above
BATCH_HEADER_SIZE = _BATCH_HEAD.size + _HEADER_CRC.size
_RECORD_HEADER = struct.Struct(">BII")  # type, payload length, crc32(type, length, payload)
_RECORD_PREFIX = struct.Struct(">BI")  # the part of the header the checksum covers
RECORD_HEADER_SIZE = _RECORD_HEADER.size
_HARD_STATE = struct.Struct(">Qq")  # current_term, voted_for (-1 = None)
_POSITION = struct.Struct(">QQ")  # index, term: BASE and RESET records
_SEGMENT_HEAD = struct.Struct(">QQ")  # segment number, first batch seq
SEGMENT_HEADER_SIZE = len(MAGIC) + _SEGMENT_HEAD.size + 4
_ENTRY_HEAD = struct.Struct(">QQB")  # index, term, kind; the entry data follows

_log = logging.getLogger(__name__)


class CorruptLogError(StorageError):
    """Damage to acknowledged data: it can be neither trusted nor dropped."""


def _record(record_type: int, *parts: bytes) -> bytes:
    length = sum(len(part) for part in parts)
    prefix = _RECORD_PREFIX.pack(record_type, length)
    crc = zlib.crc32(prefix)
    for part in parts:
        crc = zlib.crc32(part, crc)
    return _RECORD_HEADER.pack(record_type, length, crc) + b"".join(parts)


def _encode_hard_state(hard_state: HardState) -> bytes:
    if hard_state.voted_for is not None and hard_state.voted_for < 0:
        raise StorageError(f"cannot store a negative node id as a vote: {hard_state}")
    voted_for = -1 if hard_state.voted_for is None else hard_state.voted_for
    try:
        payload = _HARD_STATE.pack(hard_state.current_term, voted_for)
    except struct.error as exc:
        raise StorageError(f"hard state out of range for the log format: {hard_state}") from exc
    return _record(RECORD_HARD_STATE, payload)


def _encode_entry(entry: Entry, out: bytearray) -> None:
    try:
        head = _ENTRY_HEAD.pack(entry.index, entry.term, int(entry.kind))
        if entry.context:
            context = entry.context.encode("ascii")
            head += bytes((len(context),)) + context
    except (struct.error, UnicodeEncodeError, ValueError) as exc:
        raise StorageError(f"entry {entry.index} out of range for the log format") from exc
    if len(head) + len(entry.data) > MAX_RECORD_PAYLOAD:
        raise StorageError(
            f"entry {entry.index} holds {len(entry.data)} bytes, over the "
            f"{MAX_RECORD_PAYLOAD}-byte record limit"
        )
    record_type = RECORD_TRACED_ENTRY if entry.context else RECORD_ENTRY
    out += _record(record_type, head, entry.data)


def encode_batch(seq: int, body: bytes | bytearray) -> bytes:
    """Frame one sync's records as batch ``seq``: header, body, commit byte."""
    head = _BATCH_HEAD.pack(BATCH_MARK, seq, len(body), zlib.crc32(body))
    return b"".join((head, _HEADER_CRC.pack(zlib.crc32(head)), body, bytes((COMMIT_MARK,))))


# ---------------------------------------------------------------------------- recovery


class _Replay:
    """What recovery found: the durable state, and where the trustworthy part of the file ends."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.entries: list[Entry] = []
        # The log restarts after (base_index, base_term): 0 for a log that was never
        # compacted, else the first segment's BASE or the newest RESET.
        self.base_index = 0
        self.base_term = 0
        self.based = False
        self.reset_index = 0  # the newest RESET: a snapshot at least this new must exist
        self.first_base = 0  # where the oldest segment left says the log starts
        self.segment_base: int | None = None  # the BASE of the segment being replayed
        self.good_end = 0  # in the file being replayed
        self.next_seq = 1
        self.torn_reason: str | None = None

    def last(self) -> tuple[int, int]:
        if self.entries:
            return self.entries[-1].index, self.entries[-1].term
        return self.base_index, self.base_term


@dataclass(frozen=True)
class _Damage:
    """A batch that did not read back whole, and the first bytes of it that are wrong.

    ``start``/``end`` bound the first failing piece (header, record or commit byte): a tear's
    first damaged byte lies in there. ``batch_end`` is where the batch ends if its header is
    intact; ``incomplete`` means the file ends before the batch does.
    """

    start: int
    end: int
    reason: str
    batch_end: int | None = None
    incomplete: bool = False


def _read_batch(
    data: bytes, pos: int, seq: int, corrupt: Callable[[int, str], CorruptLogError]
) -> tuple[int, list[tuple[int, int, bytes]]] | _Damage:
    """Batch ``seq`` at ``pos``: its end and records, or what is wrong with it."""
    size = len(data)
    if size - pos < BATCH_HEADER_SIZE:
        return _Damage(pos, size, f"{size - pos} bytes, too short for a batch header", None, True)
    mark, batch_seq, length, body_crc = _BATCH_HEAD.unpack_from(data, pos)
    (header_crc,) = _HEADER_CRC.unpack_from(data, pos + _BATCH_HEAD.size)
    if mark != BATCH_MARK or zlib.crc32(data[pos : pos + _BATCH_HEAD.size]) != header_crc:
        return _Damage(pos, pos + BATCH_HEADER_SIZE, "batch header fails its checksum")
    # From here the header is whole, so its length and seq are what the writer wrote.
    if batch_seq != seq:
        raise corrupt(pos, f"batch {batch_seq} where batch {seq} was expected")
    body_start = pos + BATCH_HEADER_SIZE
    body_end = body_start + length
    batch_end = body_end + 1
    if batch_end > size:
        return _Damage(
            pos, size, f"batch of {length} bytes but the file ends first", batch_end, True
        )
    records: list[tuple[int, int, bytes]] = []
    body_intact = zlib.crc32(data[body_start:body_end]) == body_crc
    at = body_start
    while at < body_end:
        if body_end - at < RECORD_HEADER_SIZE:
            return _Damage(at, body_end, "record header cut short in its batch", batch_end)
        record_type, record_length, crc = _RECORD_HEADER.unpack_from(data, at)
        end = at + RECORD_HEADER_SIZE + record_length
        if record_length > MAX_RECORD_PAYLOAD:
            reason = f"record length {record_length} exceeds the {MAX_RECORD_PAYLOAD} limit"
            return _Damage(at, min(end, body_end), reason, batch_end)
        if end > body_end:
            return _Damage(at, body_end, "record runs past the end of its batch", batch_end)
        payload = data[at + RECORD_HEADER_SIZE : end]
        if zlib.crc32(payload, zlib.crc32(data[at : at + _RECORD_PREFIX.size])) != crc:
            return _Damage(at, end, "record fails its checksum", batch_end)
        records.append((at, record_type, payload))
        at = end
    if not body_intact:
        # Every record checks out, yet the batch's checksum does not: the header's checksum
        # over the body is wrong, which no tear can do to a header that is itself whole.
        raise corrupt(pos, "batch checksum mismatch over intact records")
    if data[body_end] != COMMIT_MARK:
        return _Damage(body_end, batch_end, "commit byte missing", batch_end)
    return batch_end, records


def _ends_in_zeros(data: bytes, start: int, end: int, unit: int) -> bool:
    """Could a tear have damaged ``data[start:end]``? Some block it touches must read as
    zeros from the piece's last byte in that block to the block's end (or end of file)."""
    size = len(data)
    end = min(end, size)
    block = start - start % unit
    while block < end:
        last = min(end, block + unit) - 1
        stop = min(block + unit, size)
        if data.count(0, last, stop) == stop - last:
            return True
        block += unit
    return False


def _written_after(data: bytes, end: int) -> bool:
    """Does anything but zeros follow ``end``? Zeros are what space the file system extended
    the file by but never filled reads as (preallocation, or a size updated before the data),
    so they are no evidence of a later write; a later batch always starts with its mark."""
    return data.count(0, end) != len(data) - end


def _later_batch(data: bytes, after: int, seq: int) -> int | None:
    """Offset of an intact header of batch ``seq`` anywhere after ``after``, if there is one."""
    pattern = bytes((BATCH_MARK,)) + seq.to_bytes(8, "big")
    at = data.find(pattern, after + 1)
    while at >= 0:
        head_end = at + _BATCH_HEAD.size
        if head_end + _HEADER_CRC.size <= len(data):
            (header_crc,) = _HEADER_CRC.unpack_from(data, head_end)
            if zlib.crc32(data[at:head_end]) == header_crc:
                return at
        at = data.find(pattern, at + 1)
    return None


def _judge(data: bytes, pos: int, seq: int, damage: _Damage, unit: int) -> str | None:
    """Why a damaged batch ``seq`` at ``pos`` is a torn last write, or None if it is not."""
    if damage.incomplete:
        return damage.reason
    if damage.batch_end is not None and _written_after(data, damage.batch_end):
        return None  # something was written after it, so this batch had been fsynced
    if not _ends_in_zeros(data, damage.start, damage.end, unit):
        return None  # whole bytes with the wrong value: a flip, not a tear
    if damage.batch_end is None and _later_batch(data, pos, seq + 1) is not None:
        return None  # its header is damaged, but the batch after it is there
    return f"{damage.reason}, and zeros follow: a write the crash cut short"


def _corruption(path: Path) -> Callable[[int, str], CorruptLogError]:
    def corrupt(offset: int, reason: str) -> CorruptLogError:
        return CorruptLogError(
            f"{path}: corrupt record at offset {offset}: {reason}; refusing to start, "
            f"the file was left untouched (restore this node from a peer or a backup)"
        )

    return corrupt


def _replay(
    path: Path, data: bytes, start: int, unit: int, result: _Replay, *, last_file: bool
) -> None:
    """Decode every batch of one file from ``start``; cut a torn last batch of the last file
    whole, raise on damage anywhere else."""
    size = len(data)
    pos = result.good_end = start
    corrupt = _corruption(path)
    while pos < size:
        batch = _read_batch(data, pos, result.next_seq, corrupt)
        if isinstance(batch, _Damage):
            torn = _judge(data, pos, result.next_seq, batch, unit) if last_file else None
            if torn is None:
                if not last_file:
                    reason = f"{batch.reason}, in a segment a newer one follows"
                elif batch.batch_end is not None and _written_after(data, batch.batch_end):
                    reason = f"{batch.reason}, with more written after its batch"
                else:
                    reason = f"{batch.reason}, and the bytes are not what a torn write leaves"
                raise corrupt(batch.start, reason)
            result.torn_reason = torn
            break
        end, records = batch
        for at, record_type, payload in records:
            _apply(result, at, record_type, payload, corrupt)
        pos = result.good_end = end
        result.next_seq += 1


def _apply(
    result: _Replay,
    at: int,
    record_type: int,
    payload: bytes,
    corrupt: Callable[[int, str], CorruptLogError],
) -> None:
    """Replay one checksummed record. It was written whole, so anything wrong with it is a
    bug or a foreign file, never a torn write, and is not ours to discard."""
    length = len(payload)
    if record_type == RECORD_HARD_STATE:
        if length != _HARD_STATE.size:
            raise corrupt(at, f"hard state record of {length} bytes")
        term, voted_for = _HARD_STATE.unpack(payload)
        if voted_for < -1:
            raise corrupt(at, f"hard state votes for node {voted_for}")
        result.hard_state = HardState(term, None if voted_for == -1 else voted_for)
    elif record_type in (RECORD_BASE, RECORD_RESET):
        if length != _POSITION.size:
            raise corrupt(at, f"position record of {length} bytes")
        index, term = _POSITION.unpack(payload)
        if record_type == RECORD_RESET:
            result.entries.clear()
            result.base_index, result.base_term = index, term
            result.reset_index = max(result.reset_index, index)
            result.based = True
        elif not result.based:
            # The oldest segment left: the log starts here; the entries before are in a
            # snapshot, which loading will insist on.
            result.base_index, result.base_term = index, term
            result.first_base = index
            result.based = True
        elif result.last() != (index, term):
            found = result.last()
            raise corrupt(at, f"segment base {(index, term)} does not follow the log {found}")
        result.segment_base = index
    elif record_type in (RECORD_ENTRY, RECORD_TRACED_ENTRY):
        if not result.based:
            raise corrupt(at, "an entry before the segment says where the log starts")
        if length < _ENTRY_HEAD.size:
            raise corrupt(at, f"entry record of {length} bytes")
        index, term, kind = _ENTRY_HEAD.unpack_from(payload)
        data_start, context = _ENTRY_HEAD.size, ""
        if record_type == RECORD_TRACED_ENTRY:
            context_end = data_start + 1 + (payload[data_start] if length > data_start else 0)
            if length < context_end:
                raise corrupt(at, f"entry {index} has a truncated trace context")
            try:
                context = payload[data_start + 1 : context_end].decode("ascii")
            except UnicodeDecodeError:
                raise corrupt(at, f"entry {index} has a non-ASCII trace context") from None
            data_start = context_end
        try:
            entry_kind = EntryKind(kind)
        except ValueError:
            raise corrupt(at, f"entry {index} has unknown kind {kind}") from None
        base = result.base_index
        last = base + len(result.entries)
        if index < 1 or index > last + 1:
            raise corrupt(at, f"entry {index} does not follow the log, which ends at {last}")
        if index <= base:
            # A truncation below where the oldest segment left says the log started: written
            # before the segments holding those entries were deleted, once a snapshot covered
            # them. The log now ends at this entry, and the snapshot holds its content.
            result.entries.clear()
            result.base_index, result.base_term = index, term
            return
        del result.entries[index - base - 1 :]
        result.entries.append(Entry(index, term, payload[data_start:], entry_kind, context))
    else:
        raise corrupt(at, f"unknown record type {record_type}")


def segment_name(number: int) -> str:
    return f"{SEGMENT_PREFIX}{number:08d}{SEGMENT_SUFFIX}"


def _segment_number(name: str) -> int | None:
    if not (name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX)):
        return None
    digits = name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)]
    return int(digits) if digits.isdigit() and len(digits) == 8 else None


def segment_header(number: int, first_seq: int) -> bytes:
    head = MAGIC + _SEGMENT_HEAD.pack(number, first_seq)
    return head + _HEADER_CRC.pack(zlib.crc32(head))


def _read_segment_header(path: Path, data: bytes, number: int) -> int:
    """The first batch seq a segment declares, after checking its header."""
    header = data[: len(MAGIC)]
    if header in OLD_MAGICS:
        raise StorageError(
            f"{path} is a raftd write-ahead log in {OLD_MAGICS[header]}; this raftd reads "
            f"only {MAGIC!r}. Refusing to start, the file was left untouched: restore this "
            f"member from a peer (empty its data directory) to upgrade"
        )
    if header != MAGIC or len(data) < SEGMENT_HEADER_SIZE:
        raise StorageError(
            f"{path} is not a raftd log segment (header {data[:8]!r}, expected {MAGIC!r}); "
            f"refusing to start, the file was left untouched"
        )
    (crc,) = _HEADER_CRC.unpack_from(data, len(MAGIC) + _SEGMENT_HEAD.size)
    declared, first_seq = _SEGMENT_HEAD.unpack_from(data, len(MAGIC))
    if zlib.crc32(data[: len(MAGIC) + _SEGMENT_HEAD.size]) != crc or declared != number:
        raise CorruptLogError(
            f"{path}: the segment header is damaged; refusing to start, the file was left "
            f"untouched (restore this node from a peer or a backup)"
        )
    return int(first_seq)


# ---------------------------------------------------------------------------- the store


class WalStorage:
    """The SnapshotStorage protocol over segment files, with the data directory locked.

    Staged writes live only in this process until ``sync``: a crash loses them, as the
    protocol allows, and a ``sync`` turns them into a single batch, one write and one fsync,
    no matter how many entries they hold. ``sync`` may run in a worker thread while the next
    Ready is being staged; syncs themselves are serialised so batches reach the file in order,
    which is what makes "only the last batch can be torn" true.
    A failed write or fsync poisons the instance: after a failed fsync the kernel may have
    dropped the dirty pages, so the only safe retry is a restart that replays the file.
    """

    def __init__(
        self,
        data_dir: Path,
        fs: FileSystem,
        lock: DirLock,
        state: _Opened,
        segment_bytes: int,
        cluster_id: str = DEFAULT_CLUSTER_ID,
    ) -> None:
        """Use ``open``: this only adopts segments that ``open`` has locked and replayed."""
        self.data_dir = data_dir
        self._fs = fs
        self._lock = lock
        self._segment_bytes = segment_bytes
        self.cluster_id = cluster_id
        replay = state.replay
        self._hard_state = replay.hard_state
        self._entries = replay.entries
        self._base_index, self._base_term = replay.base_index, replay.base_term
        self._snapshot = state.snapshot
        self._segments = state.segments  # (number, base index), oldest first
        self._file = state.active
        self._segment_size = state.active_size
        self._segment_written = state.active_written
        # Set by a snapshot: the next batch opens a segment, so that the segment holding the
        # snapshot's entries can be deleted once the trailing window passes it. Without it a
        # small-entry log fills one segment with a million entries, all replayed at a restart.
        self._rotate_requested = False
        self._next_seq = replay.next_seq
        self._staged_hard_state: tuple[HardState, bytes] | None = None
        self._staged_snapshot: Snapshot | None = None
        self._staged_appends: list[tuple[Entry, ...]] = []
        self._staged_records = bytearray()
        self._staged_first_index = self._base_index + 1
        self._staged_last_index = self._base_index + len(self._entries)
        self._failed: str | None = None
        self._closed = False
        self.sync_count = 0
        # _state guards the staged and durable copies; _sync_order keeps one sync at a time so
        # a batch taken from the buffer is written before the next one.
        self._state = threading.Lock()
        self._sync_order = threading.Lock()
        # One snapshot file written at a time. Apart from _sync_order: a member's own
        # snapshot of a large store takes seconds to write, and a follower syncs its log in
        # its loop's thread; waiting behind the snapshot there froze the whole member until
        # its election timer fired. Taken after _sync_order, before _state, never the other way.
        self._snapshot_files = threading.Lock()

    @property
    def path(self) -> Path:
        """The segment being written."""
        return self.data_dir / segment_name(self._segments[-1][0])

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        logger: Callable[[str], None] | None = None,
        fs: FileSystem | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        cluster_id: str = DEFAULT_CLUSTER_ID,
    ) -> WalStorage:
        """Lock ``data_dir``, recover its segments and snapshots (creating the first segment
        if new, migrating a format 2 ``raft.wal``) and return the store.

        ``fs`` is the file system to work on: the real one unless a test or the simulator
        passes a fake (``raftd.storage.pagecache.PageCacheDisk``). Snapshot files name the
        ``cluster_id`` they belong to; one of another cluster refuses to start.
        """
        warn = logger if logger is not None else _log.warning
        fs = fs if fs is not None else OsFileSystem()
        data_dir = Path(data_dir)
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        try:
            fs.ensure_dir(data_dir)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {data_dir}: {exc}") from exc
        lock = fs.lock(data_dir)
        opened: _Opened | None = None
        try:
            opened = _open_segments(data_dir, fs, warn, cluster_id)
        except BaseException as exc:
            lock.release()
            if isinstance(exc, OSError):
                raise StorageError(f"cannot open the log in {data_dir}: {exc}") from exc
            raise
        return cls(data_dir, fs, lock, opened, segment_bytes, cluster_id)

    # ------------------------------------------------------------------ Storage protocol

    @property
    def last_index(self) -> int:
        """The last durable index."""
        with self._state:
            return self._base_index + len(self._entries)

    def load(self) -> DurableState:
        with self._state:
            self._check_usable()
            return DurableState(
                hard_state=self._hard_state,
                entries=tuple(self._entries),
                snapshot_index=self._base_index,
                snapshot_term=self._base_term,
                snapshot=self._snapshot,
            )

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        with self._state:
            self._check_usable()
            first = entries[0].index
            if first < self._staged_first_index or first > self._staged_last_index + 1:
                raise StorageError(
                    f"append at index {first} leaves a gap or rewrites the snapshot "
                    f"(log holds {self._staged_first_index}..{self._staged_last_index})"
                )
            # Checked here rather than trusted: a gap inside the batch would be written fine
            # and only found at the next start, as corruption.
            for previous, entry in itertools.pairwise(entries):
                if entry.index != previous.index + 1:
                    raise StorageError(
                        f"append is not contiguous: entry {entry.index} follows {previous.index}"
                    )
            records = bytearray()
            for entry in entries:
                _encode_entry(entry, records)
            self._staged_records += records
            self._staged_appends.append(tuple(entries))
            self._staged_last_index = entries[-1].index

    def set_hard_state(self, hard_state: HardState) -> None:
        record = _encode_hard_state(hard_state)
        with self._state:
            self._check_usable()
            self._staged_hard_state = (hard_state, record)

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Stage a leader's snapshot: at ``sync`` its file is made durable first, then the
        batch says the log restarts after it (entries staged before it are superseded)."""
        with self._state:
            self._check_usable()
            self._staged_snapshot = snapshot
            self._staged_appends = []
            self._staged_records = bytearray()
            self._staged_first_index = snapshot.meta.index + 1
            self._staged_last_index = snapshot.meta.index

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Write this member's own snapshot durably now (its entries stay until ``compact``),
        and keep only the newest ``SNAPSHOTS_KEPT`` snapshot files. Syncs of the log go on
        meanwhile: the file is not part of the log until ``compact`` says so."""
        with self._snapshot_files:
            with self._state:
                self._check_usable()
                if self._snapshot is not None and snapshot.meta.index < self._snapshot.meta.index:
                    raise StorageError(
                        f"snapshot at {snapshot.meta.index} is older than the one at "
                        f"{self._snapshot.meta.index}"
                    )
            self._write_snapshot_file(snapshot)
            with self._state:
                # A snapshot installed from the leader meanwhile (through sync) is newer.
                if self._snapshot is None or self._snapshot.meta.index <= snapshot.meta.index:
                    self._snapshot = snapshot
                self._rotate_requested = True

    def compact(self, index: int) -> None:
        """Forget the entries up to ``index`` (a durable snapshot holds them) and delete
        every segment whose entries are all at or below it."""
        with self._sync_order:
            with self._state:
                self._check_usable()
                if self._snapshot is None or index > self._snapshot.meta.index:
                    raise StorageError(f"no durable snapshot covers index {index}")
                index = min(index, self._base_index + len(self._entries))
                if index > self._base_index:
                    self._base_term = self._entries[index - self._base_index - 1].term
                    del self._entries[: index - self._base_index]
                    self._base_index = index
                    self._staged_first_index = max(self._staged_first_index, index + 1)
                doomed = []
                while len(self._segments) > 1 and self._segments[1][1] <= index:
                    doomed.append(self._segments.pop(0)[0])
            try:
                for number in doomed:
                    self._fs.remove(self.data_dir / segment_name(number))
                if doomed:
                    self._fs.sync_dir(self.data_dir)
            except OSError as exc:
                # Only space is at stake: the segments left are still a valid log.
                _log.warning("could not delete old log segments in %s: %s", self.data_dir, exc)

    def sync(self) -> None:
        with self._sync_order:
            with self._state:
                self._check_usable()
                staged_hard_state = self._staged_hard_state
                snapshot = self._staged_snapshot
                appends = self._staged_appends
                records = self._staged_records
                if staged_hard_state is None and snapshot is None and not appends:
                    return
                self._staged_hard_state = None
                self._staged_snapshot = None
                self._staged_appends = []
                self._staged_records = bytearray()
                seq = self._next_seq
                hard_state = staged_hard_state or (
                    self._hard_state,
                    _encode_hard_state(self._hard_state),
                )
                base = (self._base_index + len(self._entries), self._last_term())
            try:
                new_segment = self._segment_written and (
                    self._rotate_requested or self._segment_size >= self._segment_bytes
                )
                if new_segment:
                    self._open_next_segment(seq)
                if snapshot is not None:
                    with self._snapshot_files:
                        self._write_snapshot_file(snapshot)
                # The newest hard state goes first in the batch; a segment's first batch
                # also says where the log stands, so the segments before it can go.
                body = bytearray()
                opening = not self._segment_written and self._segments[-1][0] > 1
                if staged_hard_state is not None or opening:
                    body += hard_state[1]
                if opening:
                    body += _record(RECORD_BASE, _POSITION.pack(*base))
                if snapshot is not None:
                    meta = snapshot.meta
                    body += _record(RECORD_RESET, _POSITION.pack(meta.index, meta.term))
                body += records
                encoded = encode_batch(seq, body)
                self._file.append(encoded)
                self._file.sync()
            except OSError as exc:
                with self._state:
                    self._failed = f"a write to {self.path} failed: {exc}"
                raise StorageError(
                    f"{self.path}: write or fsync failed ({exc}); restart to recover"
                ) from exc
            with self._state:
                self._next_seq = seq + 1
                self.sync_count += 1
                self._segment_size += len(encoded)
                self._segment_written = True
                if staged_hard_state is not None:
                    self._hard_state = staged_hard_state[0]
                if snapshot is not None:
                    self._entries.clear()
                    self._base_index, self._base_term = snapshot.meta.index, snapshot.meta.term
                    self._snapshot = snapshot
                for batch_entries in appends:
                    kept = [e for e in batch_entries if e.index > self._base_index]
                    if kept:
                        del self._entries[kept[0].index - self._base_index - 1 :]
                        self._entries.extend(kept)

    def _last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._base_term

    def _open_next_segment(self, first_seq: int) -> None:
        number = self._segments[-1][0] + 1
        path = self.data_dir / segment_name(number)
        self._fs.create(path, segment_header(number, first_seq))
        new_file = self._fs.open(path)
        self._file.close()
        with self._state:
            self._file = new_file
            self._segments.append((number, self._base_index + len(self._entries)))
            self._segment_size = SEGMENT_HEADER_SIZE
            self._segment_written = False
            self._rotate_requested = False

    def _write_snapshot_file(self, snapshot: Snapshot) -> None:
        path = self.data_dir / snapfile.file_name(snapshot.meta)
        try:
            self._fs.create(path, snapfile.encode(snapshot, self.cluster_id))
            kept = _snapshot_files(self._fs, self.data_dir)[-SNAPSHOTS_KEPT:]
            for old in _snapshot_files(self._fs, self.data_dir):
                if old not in kept:
                    self._fs.remove(self.data_dir / old[2])
            self._fs.sync_dir(self.data_dir)
        except OSError as exc:
            with self._state:
                self._failed = f"writing a snapshot to {path} failed: {exc}"
            raise StorageError(f"{path}: writing the snapshot failed ({exc})") from exc

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release the file and the lock. Unsynced writes are dropped, as a crash would."""
        with self._sync_order, self._state:
            if self._closed:
                return
            self._closed = True
            self._staged_hard_state = None
            self._staged_snapshot = None
            self._staged_appends = []
            self._staged_records = bytearray()
            self._file.close()
            self._lock.release()

    def __enter__(self) -> WalStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError(f"{self.path} is closed")
        if self._failed is not None:
            raise StorageError(f"{self._failed}; restart to recover")


# ---------------------------------------------------------------------------- opening


@dataclass
class _Opened:
    replay: _Replay
    snapshot: Snapshot | None
    segments: list[tuple[int, int]]
    active: WalFile
    active_size: int
    active_written: bool


def _snapshot_files(fs: FileSystem, data_dir: Path) -> list[tuple[int, int, str]]:
    """(index, term, name) of every snapshot file, oldest first."""
    found = []
    for name in fs.list_names(data_dir):
        parsed = snapfile.parse_name(name)
        if parsed is not None:
            found.append((*parsed, name))
    return sorted(found)


def _open_segments(
    data_dir: Path, fs: FileSystem, warn: Callable[[str], None], cluster_id: str
) -> _Opened:
    names = fs.list_names(data_dir)
    # A file half-written under its temporary name when the process died: never trusted.
    for name in names:
        if name.endswith(".tmp") and name.startswith((SEGMENT_PREFIX, "snap-")):
            fs.remove(data_dir / name)
    names = [n for n in names if not n.endswith(".tmp")]
    numbers = sorted(n for n in map(_segment_number, names) if n is not None)
    if not numbers:
        numbers = [_migrate_or_create(data_dir, fs, warn)]
    elif WAL_NAME in names:
        # A migration wrote its segment but died before removing the old file.
        fs.remove(data_dir / WAL_NAME)
        fs.sync_dir(data_dir)
    for previous, number in itertools.pairwise(numbers):
        if number != previous + 1:
            raise CorruptLogError(
                f"{data_dir}: log segment {previous + 1} is missing between {previous} and "
                f"{number}; refusing to start, the files were left untouched"
            )
    replay = _Replay()
    segments: list[tuple[int, int]] = []
    active: WalFile | None = None
    try:
        for position, number in enumerate(numbers):
            path = data_dir / segment_name(number)
            last = position == len(numbers) - 1
            if last:
                active = fs.open(path)
                # What a read returns may still be only in the page cache: a previous process
                # killed between its write and its fsync leaves exactly that. Trusting those
                # bytes (granting votes, acknowledging entries) is only safe once they are
                # durable, so the file and its name are fsynced before anything is read back.
                active.sync()
                fs.sync_dir(data_dir)
                data = active.read_all()
            else:
                data = fs.read(path)
            header = segment_header(1, 1)
            if numbers == [1] and len(data) < len(header) and header.startswith(data):
                # Only reachable if something other than fs.create made the file; it holds
                # no records, so finishing the header loses nothing.
                warn(f"{path}: header incomplete ({len(data)} bytes); rewriting it")
                active.truncate(0)  # type: ignore[union-attr]
                active.append(header)  # type: ignore[union-attr]
                active.sync()  # type: ignore[union-attr]
                data = header
            first_seq = _read_segment_header(path, data, number)
            if position == 0:
                replay.next_seq = first_seq
                replay.based = number == 1
            elif first_seq != replay.next_seq:
                raise CorruptLogError(
                    f"{path}: starts at batch {first_seq}, but the log before it ends with "
                    f"batch {replay.next_seq - 1}; refusing to start"
                )
            before = replay.last()[0] if replay.based else None
            replay.segment_base = None
            _replay(path, data, SEGMENT_HEADER_SIZE, fs.tear_unit, replay, last_file=last)
            if number > 1 and replay.segment_base is None and replay.good_end > SEGMENT_HEADER_SIZE:
                raise CorruptLogError(f"{path}: its first batch does not say where it starts")
            base = replay.segment_base if replay.segment_base is not None else before
            segments.append((number, base if base is not None else replay.base_index))
            if last and replay.good_end < len(data):
                dropped = len(data) - replay.good_end
                active.truncate(replay.good_end)  # type: ignore[union-attr]
                active.sync()  # type: ignore[union-attr]
                warn(
                    f"{path}: dropped {dropped} bytes of torn tail at offset "
                    f"{replay.good_end} ({replay.torn_reason}); keeping "
                    f"{len(replay.entries)} entries"
                )
        assert active is not None
        snapshot = _load_snapshot(data_dir, fs, replay, warn, cluster_id)
    except BaseException:
        if active is not None:
            active.close()
        raise
    return _Opened(
        replay,
        snapshot,
        segments,
        active,
        replay.good_end,
        replay.good_end > SEGMENT_HEADER_SIZE,
    )


def _load_snapshot(
    data_dir: Path,
    fs: FileSystem,
    replay: _Replay,
    warn: Callable[[str], None],
    cluster_id: str,
) -> Snapshot | None:
    """The newest snapshot file that reads back whole and still meets the log; None if the
    log never needed one. A damaged newest one falls back to an older one only while the log
    still reaches back to it; otherwise the member refuses to start."""
    needed = max(replay.first_base, replay.reset_index)
    files = _snapshot_files(fs, data_dir)
    problems = []
    for index, term, name in reversed(files):
        if index < needed:
            break
        path = data_dir / name
        try:
            found = snapfile.decode(fs.read(path), name=str(path))
        except snapfile.SnapshotFileError as exc:
            problems.append(str(exc))
            warn(f"{exc}; trying an older snapshot")
            continue
        if found.cluster_id != cluster_id:
            raise StorageError(
                f"{path} is a snapshot of cluster {found.cluster_id!r}, and this member is in "
                f"cluster {cluster_id!r}: refusing to start, the files were left untouched "
                f"(was a backup restored into the wrong data directory?)"
            )
        snapshot = found.snapshot
        if (snapshot.meta.index, snapshot.meta.term) != (index, term):
            problems.append(f"{path} holds the snapshot at {snapshot.meta.index}, not {index}")
            continue
        return snapshot
    if needed == 0:
        return None
    why = "; ".join(problems) if problems else "no snapshot file at or after it"
    raise StorageError(
        f"{data_dir}: the log starts after entry {needed}, so a snapshot of at least that "
        f"entry is needed, and none can be read ({why}). Refusing to start rather than "
        f"serve less than was acknowledged: restore this member from a peer (empty its data "
        f"directory) or from a backup"
    )


def _migrate_or_create(data_dir: Path, fs: FileSystem, warn: Callable[[str], None]) -> int:
    """Segment 1, holding a format 2 log's replayed content if there is one."""
    old = data_dir / WAL_NAME
    if not fs.exists(old):
        fs.create(data_dir / segment_name(1), segment_header(1, 1))
        return 1
    data = fs.read(old)
    header = data[: len(MAGIC_V2)]
    if len(data) < len(MAGIC_V2) and MAGIC_V2.startswith(data):
        data = header = MAGIC_V2  # a header cut short holds no records
    if header in OLD_MAGICS:
        raise StorageError(
            f"{old} is a raftd write-ahead log in {OLD_MAGICS[header]}; this raftd reads only "
            f"format 2 and later. Refusing to start, the file was left untouched: restore "
            f"this member from a peer (empty its data directory) to upgrade"
        )
    if header != MAGIC_V2:
        raise StorageError(
            f"{old} is not a raftd write-ahead log (header {data[:8]!r}); refusing to start, "
            f"the file was left untouched"
        )
    replay = _Replay()
    replay.based = True
    _replay(old, data, len(MAGIC_V2), fs.tear_unit, replay, last_file=True)
    body = bytearray(_encode_hard_state(replay.hard_state))
    for entry in replay.entries:
        _encode_entry(entry, body)
    fs.create(data_dir / segment_name(1), segment_header(1, 1) + encode_batch(1, body))
    fs.remove(old)
    fs.sync_dir(data_dir)
    warn(
        f"{old}: migrated {len(replay.entries)} entries from log format 2 to segments "
        f"({segment_name(1)})"
    )
    return 1
