"""A disk that forgets what was never fsynced, the way a power cut does (after ALICE/CrashMonkey).

``PageCacheDisk`` is an in-memory ``FileSystem`` that keeps, for each file, what a reader sees
(the page cache) apart from what the last fsync made durable. A process crash
(``kill_process``) keeps the page cache, as ``kill -9`` does; a power cut (``power_cut`` /
``crash``) decides the fate of each page written since the last fsync independently, in any
order across pages:

* kept: the page holds its new bytes;
* lost: it reads as its last synced content (zeros past the old end of file);
* torn: a prefix of its new bytes made it, the rest is the old content;

and the file length lands anywhere between the synced length and the written length. Those
are all the states recovery has to cope with, so tests can enumerate them exhaustively for
small batches (see tests/storage/test_wal_crash.py) and the simulator can draw one at random
on every crash (``PageCacheStorage``). File creation through ``create`` is atomic and durable,
as the real ``OsFileSystem.create`` makes it with rename and directory fsyncs. A ``remove`` is
durable only after ``sync_dir``: a power cut before it may bring the file back, whole.

Everything is deterministic given the ``random.Random`` a caller passes in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from raftd.core.types import DurableState, Entry, HardState, Snapshot
from raftd.storage.base import StorageError
from raftd.storage.fs import DataDirLocked, DirLock, WalFile
from raftd.storage.wal import WalStorage

DEFAULT_PAGE_BYTES = 4096


class ProcessKilled(BaseException):
    """The process died inside an fsync (``kill_at_next_sync``): nothing after it runs.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` in the code under test
    mistakes the death for an I/O error it could handle.
    """


class _File:
    """One file: ``current`` is the page cache, ``durable`` what survives a power cut."""

    def __init__(self, content: bytes) -> None:
        self.current = bytearray(content)
        self.durable = bytearray(content)
        self.dirty_from = len(content)  # no byte before this differs from the durable copy

    def write_at_end(self, data: bytes | bytearray) -> None:
        self.dirty_from = min(self.dirty_from, len(self.current))
        self.current += data

    def truncate(self, size: int) -> None:
        if size < len(self.current):
            self.dirty_from = min(self.dirty_from, size)
            del self.current[size:]
        else:
            self.dirty_from = min(self.dirty_from, len(self.current))
            self.current += bytes(size - len(self.current))

    def sync(self) -> None:
        start = min(self.dirty_from, len(self.durable))
        del self.durable[start:]
        self.durable += self.current[start:]
        self.dirty_from = len(self.current)

    @property
    def unsynced(self) -> bool:
        return self.current != self.durable


class _Handle:
    def __init__(self, disk: PageCacheDisk, file: _File) -> None:
        self._disk = disk
        self._file = file
        self._closed = False

    def read_all(self) -> bytes:
        return bytes(self._file.current)

    def append(self, data: bytes | bytearray) -> None:
        self._check()
        self._file.write_at_end(data)

    def truncate(self, size: int) -> None:
        self._check()
        self._file.truncate(size)

    def sync(self) -> None:
        self._check()
        self._disk.sync_count += 1
        if self._disk.killing is not None:
            killed, self._disk.killing = self._disk.killing, None
            raise killed
        self._file.sync()

    def close(self) -> None:
        self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise OSError(9, "Bad file descriptor (closed handle)")


class _Lock:
    def __init__(self, disk: PageCacheDisk, data_dir: Path) -> None:
        self._disk = disk
        self._data_dir = data_dir

    def release(self) -> None:
        # Only the holder's own release counts: a handle left behind by a killed process
        # must not free a lock a later process has taken since.
        if self._disk._locks.get(self._data_dir) is self:
            del self._disk._locks[self._data_dir]


class PageCacheDisk:
    """An in-memory FileSystem with a page cache that a power cut can partly lose."""

    def __init__(self, page_bytes: int = DEFAULT_PAGE_BYTES) -> None:
        if page_bytes < 1:
            raise ValueError("page_bytes must be positive")
        self.page_bytes = page_bytes
        self.sync_count = 0  # fsyncs of files, for tests that check when they happen
        self.dir_sync_count = 0
        self.killing: ProcessKilled | None = None
        self._files: dict[Path, _File] = {}
        self._dirs: set[Path] = set()
        self._locks: dict[Path, _Lock] = {}
        # Files removed since their directory's last fsync: a power cut may undo that.
        self._removed: dict[Path, _File] = {}

    # ------------------------------------------------------------------ FileSystem

    @property
    def tear_unit(self) -> int:
        return self.page_bytes

    def ensure_dir(self, path: Path) -> None:
        self._dirs.add(path)

    def lock(self, data_dir: Path) -> DirLock:
        if data_dir in self._locks:
            raise DataDirLocked(f"data directory {data_dir} is in use (on the fake disk)")
        lock = _Lock(self, data_dir)
        self._locks[data_dir] = lock
        return lock

    def exists(self, path: Path) -> bool:
        return path in self._files

    def create(self, path: Path, content: bytes) -> None:
        self._files[path] = _File(content)

    def open(self, path: Path) -> WalFile:
        try:
            return _Handle(self, self._files[path])
        except KeyError:
            raise FileNotFoundError(2, "No such file", str(path)) from None

    def sync_dir(self, path: Path) -> None:
        self.dir_sync_count += 1
        for removed in [p for p in self._removed if p.parent == path]:
            del self._removed[removed]

    def list_names(self, path: Path) -> list[str]:
        return sorted(p.name for p in self._files if p.parent == path)

    def read(self, path: Path) -> bytes:
        try:
            return bytes(self._files[path].current)
        except KeyError:
            raise FileNotFoundError(2, "No such file", str(path)) from None

    def remove(self, path: Path) -> None:
        try:
            self._removed[path] = self._files.pop(path)
        except KeyError:
            raise FileNotFoundError(2, "No such file", str(path)) from None

    # ------------------------------------------------------------------ inspection

    def durable(self, path: Path) -> bytes:
        """What a power cut right now would leave, at best."""
        return bytes(self._files[path].durable)

    def write(self, path: Path, content: bytes) -> None:
        """Replace a file's content, durably (for tests that damage a log by hand)."""
        self._files[path] = _File(content)

    def dirty_pages(self, path: Path) -> list[int]:
        """Indexes of the pages a power cut could change in ``path``."""
        file = self._files[path]
        if not file.unsynced:
            return []
        end = max(len(file.current), len(file.durable))
        first = min(file.dirty_from, len(file.durable)) // self.page_bytes
        return list(range(first, (end + self.page_bytes - 1) // self.page_bytes))

    def length_range(self, path: Path) -> tuple[int, int]:
        """The lengths a power cut can leave ``path`` with: synced to written, both included."""
        file = self._files[path]
        if not file.unsynced:
            return len(file.current), len(file.current)
        low, high = sorted((len(file.durable), len(file.current)))
        return low, high

    # ------------------------------------------------------------------ crashes

    def kill_at_next_sync(self) -> None:
        """Make the next file fsync raise ProcessKilled instead of syncing: a kill -9 there."""
        self.killing = ProcessKilled()

    def kill_process(self) -> None:
        """The process died: its locks are gone, the page cache (and so every file) stays."""
        self.killing = None
        self._locks.clear()

    def power_cut(self, path: Path, length: int, kept: Mapping[int, int] | None = None) -> None:
        """Play one power cut on ``path``: it ends up ``length`` bytes long, and dirty page
        ``p`` keeps its first ``kept[p]`` new bytes (0: lost, ``page_bytes``: whole; pages not
        named are kept whole). The result is durable, as after any restart."""
        file = self._files[path]
        low, high = self.length_range(path)
        if not low <= length <= high:
            raise ValueError(f"a power cut leaves {path} between {low} and {high} bytes")
        kept = kept or {}
        size = self.page_bytes
        end = max(len(file.current), len(file.durable))
        new = bytes(file.current) + bytes(end - len(file.current))
        old = bytes(file.durable) + bytes(end - len(file.durable))
        result = bytearray(new)
        for page in self.dirty_pages(path):
            start = page * size
            keep = kept.get(page, size)
            if not 0 <= keep <= size:
                raise ValueError(f"page {page} cannot keep {keep} bytes")
            result[start + keep : start + size] = old[start + keep : start + size]
        del result[length:]
        file.current = result
        file.durable = bytearray(result)
        file.dirty_from = len(result)
        self.kill_process()

    def undo_removals(self, which: Sequence[Path] | None = None) -> None:
        """A power cut before the directory fsync: removed files come back (all, or those
        named), with what was durable in them."""
        for path in list(self._removed) if which is None else which:
            file = self._removed.pop(path)
            file.current = bytearray(file.durable)
            file.dirty_from = len(file.durable)
            self._files[path] = file
        self._removed.clear()

    def crash(self, rng: random.Random) -> None:
        """A power cut with a random outcome for every file: any length in range, and each
        dirty page kept, lost or torn at a random byte with equal odds; each removal not yet
        made durable is undone or not, at even odds."""
        self.undo_removals([p for p in sorted(self._removed) if rng.random() < 0.5])
        for path in sorted(self._files):
            if not self._files[path].unsynced:
                continue
            low, high = self.length_range(path)
            kept: dict[int, int] = {}
            for page in self.dirty_pages(path):
                fate = rng.randrange(3)
                kept[page] = (0, self.page_bytes, rng.randrange(1, self.page_bytes))[fate]
            self.power_cut(path, rng.randint(low, high), kept)
        self.kill_process()


class PageCacheStorage:
    """WalStorage on a PageCacheDisk, for the deterministic simulator.

    It keeps MemoryStorage's contract (``load``, ``append``, ``set_hard_state``, ``sync``,
    the snapshot calls, ``crash``, ``sync_count``, ``last_index``), but a ``crash`` plays out
    on the bytes: it may
    strike inside the fsync of the staged batch (so the batch is in the page cache, not on
    disk), then the process dies, and sometimes the power goes too, tearing or losing
    unsynced pages at random. The WAL is then reopened, so ``load()`` returns exactly what
    recovery finds. All choices come from ``rng``, so a simulator seed still replays exactly.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        page_bytes: int = 512,
        segment_bytes: int = 16 * 1024,
        mid_sync_share: float = 0.5,
        power_cut_share: float = 0.5,
        logger: Callable[[str], None] | None = None,
    ) -> None:
        """``mid_sync_share`` of crashes die inside the staged batch's fsync;
        ``power_cut_share`` of crashes also lose the page cache. A small page keeps files,
        and so each run, small while still spreading a batch over several pages; small
        segments make the log roll, and compaction delete, many times in one run."""
        self._rng = rng
        self._mid_sync_share = mid_sync_share
        self._power_cut_share = power_cut_share
        self.disk = PageCacheDisk(page_bytes)
        self.data_dir = Path("node")
        self.recovery_log: list[str] = []
        self._logger = logger if logger is not None else self.recovery_log.append
        self._segment_bytes = segment_bytes
        self._wal = self._open()
        self._syncs_before = 0

    def _open(self) -> WalStorage:
        return WalStorage.open(
            self.data_dir, fs=self.disk, logger=self._logger, segment_bytes=self._segment_bytes
        )

    @property
    def sync_count(self) -> int:
        return self._syncs_before + self._wal.sync_count

    @property
    def last_index(self) -> int:
        return self._wal.last_index

    def load(self) -> DurableState:
        return self._wal.load()

    def append(self, entries: Sequence[Entry]) -> None:
        self._wal.append(entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self._wal.set_hard_state(hard_state)

    def sync(self) -> None:
        self._wal.sync()

    def install_snapshot(self, snapshot: Snapshot) -> None:
        self._wal.install_snapshot(snapshot)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self._wal.save_snapshot(snapshot)

    def compact(self, index: int) -> None:
        self._wal.compact(index)

    def crash(self) -> None:
        """Die (maybe inside the staged batch's fsync), maybe lose power, then recover."""
        wal = self._wal
        self._syncs_before += wal.sync_count
        if self._rng.random() < self._mid_sync_share:
            self.disk.kill_at_next_sync()
            try:
                wal.sync()  # writes the staged batch, then dies in its fsync
            except ProcessKilled:
                pass
            except StorageError:
                pass  # a poisoned store has nothing more to write
        self.disk.kill_process()
        if self._rng.random() < self._power_cut_share:
            self.disk.crash(self._rng)
        self._wal = self._open()
