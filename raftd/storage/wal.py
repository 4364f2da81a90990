"""A write-ahead log file: the durable Storage the daemon runs on.

One append-only file, ``raft.wal``, holds both the hard state and the log, so a single fsync
makes a whole Ready durable at once (group commit) and there is no moment where a vote is on
disk but the entries it depended on are not, or the reverse. Nothing is ever rewritten in
place: a conflicting suffix is replaced by appending records whose index is at or below the
current last index, and replay truncates the log there, exactly as ``append`` does in memory.

Layout::

    header  b"RAFTWAL1"
    record  length u32 | crc32(type + payload) u32 | type u8 | payload      (big-endian)
    HARD_STATE payload: current_term u64 | voted_for i64 (-1 for None)
    ENTRY      payload: index u64 | term u64 | kind u8 | data
    TRACED_ENTRY payload: index u64 | term u64 | kind u8 | context length u8 | context | data
               (an entry proposed inside a sampled trace: context is its ASCII traceparent)

Recovery tells a torn tail (a crash in the middle of the last write, which the protocol
tolerates because those writes were never acknowledged) from corruption before the tail
(which means acknowledged data is damaged). The first is cut off with a warning; the second
stops the node with the file left as found, because truncating there would silently drop
entries this node may have promised a leader it holds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from raftd.core.types import DurableState, Entry, EntryKind, HardState
from raftd.storage.base import StorageError

MAGIC = b"RAFTWAL1"
WAL_NAME = "raft.wal"
LOCK_NAME = "LOCK"

RECORD_HARD_STATE = 1
RECORD_ENTRY = 2
RECORD_TRACED_ENTRY = 3

# A cap on one record, so a damaged length field cannot make recovery allocate or skip an
# absurd amount; an append bigger than this is refused up front instead of written.
MAX_RECORD_PAYLOAD = 64 * 1024 * 1024

_RECORD_HEADER = struct.Struct(">IIB")  # payload length, crc32(type + payload), type
_HARD_STATE = struct.Struct(">Qq")  # current_term, voted_for (-1 = None)
_ENTRY_HEAD = struct.Struct(">QQB")  # index, term, kind; the entry data follows
HEADER_SIZE = _RECORD_HEADER.size

_log = logging.getLogger(__name__)


class DataDirLocked(StorageError):
    """Another process has this data directory open: two writers would interleave records."""


class CorruptLogError(StorageError):
    """Damage before the end of the log: acknowledged data cannot be trusted or dropped."""


def _crc(record_type: int, *parts: bytes) -> int:
    crc = zlib.crc32(bytes((record_type,)))
    for part in parts:
        crc = zlib.crc32(part, crc)
    return crc


def _encode_hard_state(hard_state: HardState) -> bytes:
    if hard_state.voted_for is not None and hard_state.voted_for < 0:
        raise StorageError(f"cannot store a negative node id as a vote: {hard_state}")
    voted_for = -1 if hard_state.voted_for is None else hard_state.voted_for
    try:
        payload = _HARD_STATE.pack(hard_state.current_term, voted_for)
    except struct.error as exc:
        raise StorageError(f"hard state out of range for the log format: {hard_state}") from exc
    crc = _crc(RECORD_HARD_STATE, payload)
    return _RECORD_HEADER.pack(len(payload), crc, RECORD_HARD_STATE) + payload


def _encode_entry(entry: Entry, out: bytearray) -> None:
    try:
        head = _ENTRY_HEAD.pack(entry.index, entry.term, int(entry.kind))
        if entry.context:
            context = entry.context.encode("ascii")
            head += bytes((len(context),)) + context
    except (struct.error, UnicodeEncodeError, ValueError) as exc:
        raise StorageError(f"entry {entry.index} out of range for the log format") from exc
    size = len(head) + len(entry.data)
    if size > MAX_RECORD_PAYLOAD:
        raise StorageError(
            f"entry {entry.index} holds {len(entry.data)} bytes, over the "
            f"{MAX_RECORD_PAYLOAD}-byte record limit"
        )
    record_type = RECORD_TRACED_ENTRY if entry.context else RECORD_ENTRY
    out += _RECORD_HEADER.pack(size, _crc(record_type, head, entry.data), record_type)
    out += head
    out += entry.data


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Replay:
    """What recovery found: the durable state, and where the trustworthy part of the file ends."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.entries: list[Entry] = []
        self.good_end = len(MAGIC)
        self.torn_reason: str | None = None


def _replay(path: Path, data: bytes) -> _Replay:
    """Decode every record; stop at a torn tail, raise on damage before it."""
    result = _Replay()
    size = len(data)
    pos = len(MAGIC)

    def corrupt(offset: int, reason: str) -> CorruptLogError:
        return CorruptLogError(
            f"{path}: corrupt record at offset {offset}: {reason}; refusing to start, "
            f"the file was left untouched (restore this node from a peer or a backup)"
        )

    def zeros_from(offset: int) -> bool:
        return data.count(0, offset) == size - offset

    while pos < size:
        if size - pos < HEADER_SIZE:
            result.torn_reason = f"{size - pos} bytes, too short for a record header"
            break
        length, crc, record_type = _RECORD_HEADER.unpack_from(data, pos)
        end = pos + HEADER_SIZE + length
        if end > size:
            # A length running past EOF is what an interrupted write leaves, whether or not
            # the length is plausible: the record's bytes simply never all arrived.
            result.torn_reason = (
                "only zero bytes"
                if zeros_from(pos)
                else f"record announces {length} bytes but the file ends first"
            )
            break
        if length > MAX_RECORD_PAYLOAD:
            if zeros_from(pos):
                result.torn_reason = "only zero bytes"
                break
            raise corrupt(pos, f"record length {length} exceeds the {MAX_RECORD_PAYLOAD} limit")
        payload = data[pos + HEADER_SIZE : end]
        if _crc(record_type, payload) != crc:
            if zeros_from(pos):
                result.torn_reason = "only zero bytes"
                break
            if end == size or zeros_from(end):
                result.torn_reason = "last record fails its checksum"
                break
            raise corrupt(pos, "checksum mismatch with more records after it")
        # From here the checksum holds, so the record was written whole: anything wrong with
        # it is a bug or a foreign file, never a torn write, and is not ours to discard.
        if record_type == RECORD_HARD_STATE:
            if length != _HARD_STATE.size:
                raise corrupt(pos, f"hard state record of {length} bytes")
            term, voted_for = _HARD_STATE.unpack(payload)
            if voted_for < -1:
                raise corrupt(pos, f"hard state votes for node {voted_for}")
            result.hard_state = HardState(term, None if voted_for == -1 else voted_for)
        elif record_type in (RECORD_ENTRY, RECORD_TRACED_ENTRY):
            if length < _ENTRY_HEAD.size:
                raise corrupt(pos, f"entry record of {length} bytes")
            index, term, kind = _ENTRY_HEAD.unpack_from(payload)
            data_start, context = _ENTRY_HEAD.size, ""
            if record_type == RECORD_TRACED_ENTRY:
                context_end = data_start + 1 + (payload[data_start] if length > data_start else 0)
                if length < context_end:
                    raise corrupt(pos, f"entry {index} has a truncated trace context")
                try:
                    context = payload[data_start + 1 : context_end].decode("ascii")
                except UnicodeDecodeError:
                    raise corrupt(pos, f"entry {index} has a non-ASCII trace context") from None
                data_start = context_end
            try:
                entry_kind = EntryKind(kind)
            except ValueError:
                raise corrupt(pos, f"entry {index} has unknown kind {kind}") from None
            last = len(result.entries)
            if index < 1 or index > last + 1:
                raise corrupt(pos, f"entry {index} does not follow the log, which ends at {last}")
            del result.entries[index - 1 :]
            result.entries.append(Entry(index, term, payload[data_start:], entry_kind, context))
        else:
            raise corrupt(pos, f"unknown record type {record_type}")
        pos = end
        result.good_end = pos
    return result


class WalStorage:
    """The Storage protocol over one write-ahead log file, with the data directory locked.

    Staged writes live only in this process until ``sync``: a crash loses them, as the
    protocol allows, and a ``sync`` turns them into a single write and a single fsync no
    matter how many entries they hold. ``sync`` may run in a worker thread while the next
    Ready is being staged; syncs themselves are serialised so records reach the file in order.
    A failed write or fsync poisons the instance: after a failed fsync the kernel may have
    dropped the dirty pages, so the only safe retry is a restart that replays the file.
    """

    def __init__(
        self,
        data_dir: Path,
        wal_fd: int,
        lock_fd: int,
        replay: _Replay,
    ) -> None:
        """Use ``open``: this only adopts descriptors that ``open`` has locked and replayed."""
        self.data_dir = data_dir
        self.path = data_dir / WAL_NAME
        self._fd = wal_fd
        self._lock_fd = lock_fd
        self._hard_state = replay.hard_state
        self._entries = replay.entries
        self._staged_hard_state: tuple[HardState, bytes] | None = None
        self._staged_appends: list[tuple[Entry, ...]] = []
        self._staged_records = bytearray()
        self._staged_last_index = len(self._entries)
        self._failed: str | None = None
        self._closed = False
        # _state guards the staged and durable copies; _sync_order keeps one sync at a time so
        # a batch taken from the buffer is written before the next one.
        self._state = threading.Lock()
        self._sync_order = threading.Lock()

    @classmethod
    def open(cls, data_dir: Path, *, logger: Callable[[str], None] | None = None) -> WalStorage:
        """Lock ``data_dir``, recover ``raft.wal`` (creating both if new) and return the store."""
        warn = logger if logger is not None else _log.warning
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
                _fsync_dir(data_dir.resolve().parent)
            except OSError as exc:
                raise StorageError(f"cannot create data directory {data_dir}: {exc}") from exc
        lock_fd = _lock(data_dir)
        wal_fd = -1
        try:
            path = data_dir / WAL_NAME
            if not path.exists():
                _create(path)
            wal_fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            # What a read returns may still be only in the page cache: a previous process
            # killed between its write and its fsync leaves exactly that. Trusting those bytes
            # (granting votes, acknowledging entries) is only safe once they are durable, so
            # the file and its name are fsynced before anything is read back.
            os.fsync(wal_fd)
            _fsync_dir(data_dir)
            with open(wal_fd, "rb", buffering=0, closefd=False) as reader:
                data = reader.readall()
            if len(data) < len(MAGIC) and MAGIC.startswith(data):
                # Only reachable if something other than _create made the file; it holds no
                # records, so finishing the header loses nothing.
                warn(f"{path}: header incomplete ({len(data)} bytes); rewriting it")
                os.ftruncate(wal_fd, 0)
                _write_all(wal_fd, MAGIC)
                os.fsync(wal_fd)
                data = MAGIC
            if data[: len(MAGIC)] != MAGIC:
                raise StorageError(
                    f"{path} is not a raftd write-ahead log (header {data[:8]!r}, expected "
                    f"{MAGIC!r}); refusing to start, the file was left untouched"
                )
            replay = _replay(path, data)
            if replay.good_end < len(data):
                dropped = len(data) - replay.good_end
                os.ftruncate(wal_fd, replay.good_end)
                os.fsync(wal_fd)
                warn(
                    f"{path}: dropped {dropped} bytes of torn tail at offset "
                    f"{replay.good_end} ({replay.torn_reason}); keeping "
                    f"{len(replay.entries)} entries"
                )
        except BaseException as exc:
            if wal_fd >= 0:
                os.close(wal_fd)
            os.close(lock_fd)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot open {data_dir / WAL_NAME}: {exc}") from exc
            raise
        return cls(data_dir, wal_fd, lock_fd, replay)

    # ------------------------------------------------------------------ Storage protocol

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
            # The newest hard state goes first: if the write is torn, whatever prefix survives
            # is a higher term with an older log, which Raft accepts, never entries of a term
            # the hard state on disk has not reached.
            batch = records
            if staged_hard_state is not None:
                batch = bytearray(staged_hard_state[1])
                batch += records
            try:
                _write_all(self._fd, batch)
                os.fsync(self._fd)
            except OSError as exc:
                with self._state:
                    self._failed = f"a write to {self.path} failed: {exc}"
                raise StorageError(
                    f"{self.path}: write or fsync failed ({exc}); restart to recover"
                ) from exc
            with self._state:
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
            os.close(self._fd)
            os.close(self._lock_fd)  # closing the descriptor releases the flock

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


def _lock(data_dir: Path) -> int:
    """Hold an exclusive flock on ``data_dir/LOCK`` for as long as the descriptor is open."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot open lock file {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            pid = int(os.pread(fd, 32, 0).decode().strip())
            holder = f" (pid {pid})"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise DataDirLocked(
                f"data directory {data_dir} is in use by another raftd process{holder}; "
                f"stop it or choose another directory"
            ) from exc
        raise StorageError(f"cannot lock {path}: {exc}") from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"cannot write lock file {path}: {exc}") from exc
    return fd


def _create(path: Path) -> None:
    """Make a new, empty log appear whole: header written and fsynced before it gets its name.

    Going through a temporary name means a crash mid-creation leaves no half-written
    ``raft.wal`` behind to be mistaken for a damaged one; the directory fsync makes the new
    name itself survive a power cut.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, MAGIC)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
