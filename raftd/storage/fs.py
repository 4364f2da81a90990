"""The handful of file-system operations the WAL performs, behind one seam.

WalStorage never calls ``os`` itself: it asks a ``FileSystem``. The daemon uses ``OsFileSystem``
(plain POSIX calls, looked up on ``os`` at call time so tests can still monkeypatch
``os.write`` / ``os.fsync``); crash-consistency tests and the simulator use
``raftd.storage.pagecache.PageCacheDisk``, which keeps what was written apart from what was
fsynced and can therefore play out what a power cut does to the bytes in between. The seam
is deliberately narrow (append, truncate, fsync, read back, publish a new file atomically,
list, delete):
everything the recovery rules rely on is in these few calls, so a fake that implements them
faithfully exercises the real recovery code.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Protocol

from raftd.storage.base import StorageError

LOCK_NAME = "LOCK"

# The smallest unit a power cut is assumed to tear at, for the torn-versus-corrupt rule in
# wal.py. Disks promise atomic 512-byte sectors at best, and the page cache writes back in
# pages made of them, so a torn write leaves zeros from some point up to a sector boundary
# at least; a smaller unit than the real one only makes the rule more forgiving, never wrong.
SECTOR_BYTES = 512


class DataDirLocked(StorageError):
    """Another process has this data directory open: two writers would interleave records."""


class WalFile(Protocol):
    """One open log file: read it whole, append to it, cut it, make it durable."""

    def read_all(self) -> bytes:
        """Everything the file holds now, as a reader would see it (page cache included)."""
        ...

    def append(self, data: bytes | bytearray) -> None:
        """Write all of ``data`` at the end of the file (not yet durable)."""
        ...

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes (not yet durable)."""
        ...

    def sync(self) -> None:
        """Make every write and truncation so far durable (fsync)."""
        ...

    def close(self) -> None: ...


class DirLock(Protocol):
    def release(self) -> None: ...


class FileSystem(Protocol):
    """What WalStorage needs from the machine it runs on."""

    @property
    def tear_unit(self) -> int:
        """Bytes per block a crash can tear at (see ``SECTOR_BYTES``)."""
        ...

    def ensure_dir(self, path: Path) -> None:
        """Create ``path`` (and parents) if missing, with its name made durable."""
        ...

    def lock(self, data_dir: Path) -> DirLock:
        """Hold ``data_dir`` exclusively until released; raise DataDirLocked if it is taken."""
        ...

    def exists(self, path: Path) -> bool: ...

    def create(self, path: Path, content: bytes) -> None:
        """Make a file holding exactly ``content`` appear at ``path``, durably and whole."""
        ...

    def open(self, path: Path) -> WalFile:
        """Open an existing file for reading and appending."""
        ...

    def sync_dir(self, path: Path) -> None:
        """Make the directory's entries (names created or renamed in it) durable."""
        ...

    def list_names(self, path: Path) -> list[str]:
        """The names of the files in directory ``path``."""
        ...

    def read(self, path: Path) -> bytes:
        """A whole file, as a reader would see it."""
        ...

    def remove(self, path: Path) -> None:
        """Delete a file; the deletion is durable only after ``sync_dir`` of its directory."""
        ...


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _OsFile:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read_all(self) -> bytes:
        with open(self._fd, "rb", buffering=0, closefd=False) as reader:
            reader.seek(0)
            return reader.readall()

    def append(self, data: bytes | bytearray) -> None:
        _write_all(self._fd, data)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class _OsLock:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        os.close(self._fd)  # closing the descriptor releases the flock


class OsFileSystem:
    """The real thing: POSIX calls on the local file system."""

    @property
    def tear_unit(self) -> int:
        return SECTOR_BYTES

    def ensure_dir(self, path: Path) -> None:
        if path.is_dir():
            return
        path.mkdir(parents=True, exist_ok=True)
        self.sync_dir(path.resolve().parent)

    def lock(self, data_dir: Path) -> DirLock:
        return _OsLock(_lock(data_dir))

    def exists(self, path: Path) -> bool:
        return path.exists()

    def create(self, path: Path, content: bytes) -> None:
        """Write under a temporary name, fsync, rename, fsync the directory.

        Going through a temporary name means a crash mid-creation leaves no half-written
        file behind to be mistaken for a damaged one; the directory fsync makes the new
        name itself survive a power cut.
        """
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self.sync_dir(path.parent)

    def open(self, path: Path) -> WalFile:
        return _OsFile(os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC))

    def sync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def list_names(self, path: Path) -> list[str]:
        return sorted(os.listdir(path))

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def remove(self, path: Path) -> None:
        os.unlink(path)


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
