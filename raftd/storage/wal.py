"""A write-ahead log file: the durable Storage the daemon runs on.

One append-only file, ``raft.wal``, holds both the hard state and the log, so a single fsync
makes a whole Ready durable at once (group commit) and there is no moment where a vote is on
disk but the entries it depended on are not, or the reverse. Nothing is ever rewritten in
place: a conflicting suffix is replaced by appending records whose index is at or below the
current last index, and replay truncates the log there, exactly as ``append`` does in memory.

Layout (big-endian)::

    file    b"RAFTWAL2" batch*
    batch   header body commit
    header  0xBA | seq u64 | body length u32 | crc32(body) u32 | crc32(the 17 bytes before) u32
    body    record+                      (what one sync() wrote: its hard state first)
    commit  0xC5                         (one byte, never zero: see below)
    record  type u8 | payload length u32 | crc32(type, length, payload) u32 | payload
    HARD_STATE payload: current_term u64 | voted_for i64 (-1 for None)
    ENTRY      payload: index u64 | term u64 | kind u8 | data
    TRACED_ENTRY payload: index u64 | term u64 | kind u8 | context length u8 | context | data
               (an entry proposed inside a sampled trace: context is its ASCII traceparent)

Why batches. Each ``sync`` writes one batch and fsyncs it before the next batch is written, so
at any crash at most one batch, the last, holds bytes that were never fsynced: only it can be
torn, and only its loss is harmless (it was never acknowledged). Damage anywhere else is
corruption of acknowledged data. Seq numbers count batches from 1, so a whole, checksummed
batch in the wrong place is caught too.

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

from raftd.core.types import DurableState, Entry, EntryKind, HardState
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

MAGIC = b"RAFTWAL2"
# Formats this code recognises but will not read: refused with a message, never guessed at.
OLD_MAGICS = {b"RAFTWAL1": "format 1, whose recovery could not tell a torn batch from damage"}
WAL_NAME = "raft.wal"

RECORD_HARD_STATE = 1
RECORD_ENTRY = 2
RECORD_TRACED_ENTRY = 3

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
        self.good_end = len(MAGIC)
        self.next_seq = 1
        self.torn_reason: str | None = None


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


def _replay(path: Path, data: bytes, unit: int) -> _Replay:
    """Decode every batch; cut a torn last batch whole, raise on damage anywhere else."""
    result = _Replay()
    size = len(data)
    pos = len(MAGIC)

    def corrupt(offset: int, reason: str) -> CorruptLogError:
        return CorruptLogError(
            f"{path}: corrupt record at offset {offset}: {reason}; refusing to start, "
            f"the file was left untouched (restore this node from a peer or a backup)"
        )

    while pos < size:
        batch = _read_batch(data, pos, result.next_seq, corrupt)
        if isinstance(batch, _Damage):
            torn = _judge(data, pos, result.next_seq, batch, unit)
            if torn is None:
                if batch.batch_end is not None and _written_after(data, batch.batch_end):
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
    return result


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
    elif record_type in (RECORD_ENTRY, RECORD_TRACED_ENTRY):
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
        last = len(result.entries)
        if index < 1 or index > last + 1:
            raise corrupt(at, f"entry {index} does not follow the log, which ends at {last}")
        del result.entries[index - 1 :]
        result.entries.append(Entry(index, term, payload[data_start:], entry_kind, context))
    else:
        raise corrupt(at, f"unknown record type {record_type}")


# ---------------------------------------------------------------------------- the store


class WalStorage:
    """The Storage protocol over one write-ahead log file, with the data directory locked.

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
        wal_file: WalFile,
        lock: DirLock,
        replay: _Replay,
    ) -> None:
        """Use ``open``: this only adopts a file that ``open`` has locked and replayed."""
        self.data_dir = data_dir
        self.path = data_dir / WAL_NAME
        self._file = wal_file
        self._lock = lock
        self._hard_state = replay.hard_state
        self._entries = replay.entries
        self._next_seq = replay.next_seq
        self._staged_hard_state: tuple[HardState, bytes] | None = None
        self._staged_appends: list[tuple[Entry, ...]] = []
        self._staged_records = bytearray()
        self._staged_last_index = len(self._entries)
        self._failed: str | None = None
        self._closed = False
        self.sync_count = 0
        # _state guards the staged and durable copies; _sync_order keeps one sync at a time so
        # a batch taken from the buffer is written before the next one.
        self._state = threading.Lock()
        self._sync_order = threading.Lock()

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        logger: Callable[[str], None] | None = None,
        fs: FileSystem | None = None,
    ) -> WalStorage:
        """Lock ``data_dir``, recover ``raft.wal`` (creating both if new) and return the store.

        ``fs`` is the file system to work on: the real one unless a test or the simulator
        passes a fake (``raftd.storage.pagecache.PageCacheDisk``).
        """
        warn = logger if logger is not None else _log.warning
        fs = fs if fs is not None else OsFileSystem()
        data_dir = Path(data_dir)
        try:
            fs.ensure_dir(data_dir)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {data_dir}: {exc}") from exc
        lock = fs.lock(data_dir)
        wal_file: WalFile | None = None
        path = data_dir / WAL_NAME
        try:
            if not fs.exists(path):
                fs.create(path, MAGIC)
            wal_file = fs.open(path)
            # What a read returns may still be only in the page cache: a previous process
            # killed between its write and its fsync leaves exactly that. Trusting those bytes
            # (granting votes, acknowledging entries) is only safe once they are durable, so
            # the file and its name are fsynced before anything is read back.
            wal_file.sync()
            fs.sync_dir(data_dir)
            data = wal_file.read_all()
            if len(data) < len(MAGIC) and MAGIC.startswith(data):
                # Only reachable if something other than fs.create made the file; it holds no
                # records, so finishing the header loses nothing.
                warn(f"{path}: header incomplete ({len(data)} bytes); rewriting it")
                wal_file.truncate(0)
                wal_file.append(MAGIC)
                wal_file.sync()
                data = MAGIC
            header = data[: len(MAGIC)]
            if header in OLD_MAGICS:
                raise StorageError(
                    f"{path} is a raftd write-ahead log in {OLD_MAGICS[header]}; this raftd "
                    f"reads only {MAGIC!r}. Refusing to start, the file was left untouched: "
                    f"restore this member from a peer (empty its data directory) to upgrade"
                )
            if header != MAGIC:
                raise StorageError(
                    f"{path} is not a raftd write-ahead log (header {data[:8]!r}, expected "
                    f"{MAGIC!r}); refusing to start, the file was left untouched"
                )
            replay = _replay(path, data, fs.tear_unit)
            if replay.good_end < len(data):
                dropped = len(data) - replay.good_end
                wal_file.truncate(replay.good_end)
                wal_file.sync()
                warn(
                    f"{path}: dropped {dropped} bytes of torn tail at offset "
                    f"{replay.good_end} ({replay.torn_reason}); keeping "
                    f"{len(replay.entries)} entries"
                )
        except BaseException as exc:
            if wal_file is not None:
                wal_file.close()
            lock.release()
            if isinstance(exc, OSError):
                raise StorageError(f"cannot open {path}: {exc}") from exc
            raise
        return cls(data_dir, wal_file, lock, replay)

    # ------------------------------------------------------------------ Storage protocol

    @property
    def last_index(self) -> int:
        """The last durable index."""
        with self._state:
            return len(self._entries)

    def load(self) -> DurableState:
        with self._state:
            self._check_usable()
            return DurableState(hard_state=self._hard_state, entries=tuple(self._entries))

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        with self._state:
            self._check_usable()
            first = entries[0].index
            if first < 1 or first > self._staged_last_index + 1:
                raise StorageError(
                    f"append at index {first} leaves a gap or rewrites the snapshot "
                    f"(log holds 1..{self._staged_last_index})"
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

    def sync(self) -> None:
        with self._sync_order:
            with self._state:
                self._check_usable()
                staged_hard_state = self._staged_hard_state
                appends = self._staged_appends
                records = self._staged_records
                if staged_hard_state is None and not appends:
                    return
                self._staged_hard_state = None
                self._staged_appends = []
                self._staged_records = bytearray()
                seq = self._next_seq
            # The newest hard state goes first in the batch. A torn batch is cut whole, so
            # the order no longer matters for recovery; it keeps the file readable in the
            # order a Ready states its contract.
            body = records
            if staged_hard_state is not None:
                body = bytearray(staged_hard_state[1])
                body += records
            try:
                self._file.append(encode_batch(seq, body))
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
                if staged_hard_state is not None:
                    self._hard_state = staged_hard_state[0]
                for batch_entries in appends:
                    del self._entries[batch_entries[0].index - 1 :]
                    self._entries.extend(batch_entries)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release the file and the lock. Unsynced writes are dropped, as a crash would."""
        with self._sync_order, self._state:
            if self._closed:
                return
            self._closed = True
            self._staged_hard_state = None
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
