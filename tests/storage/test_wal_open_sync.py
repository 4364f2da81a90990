"""A restart must make what it reads back durable before trusting it.

A process killed between its write and its fsync leaves bytes that only the page cache
holds; the next start reads them back as if they were on disk. These tests watch the fsyncs
that ``WalStorage.open`` issues and check the file's own fsync comes before ``open``
returns a state built from those bytes, on every path (clean file, torn tail, fresh file).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from raftd.core import Entry, HardState
from raftd.storage import WalStorage


def _fsyncs_of_regular_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each fsync as 'file' or 'dir', passing it through to the real call."""
    seen: list[str] = []
    real_fsync = os.fsync

    def spying_fsync(fd: int) -> None:
        seen.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spying_fsync)
    return seen


def _unsynced_batch(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log whose last write reached the file but whose fsync never ran (kill -9 there)."""
    with WalStorage.open(data_dir) as wal:
        wal.set_hard_state(HardState(1, 1))
        wal.append([Entry(1, 1, b"a")])
        wal.sync()
    with WalStorage.open(data_dir) as wal:
        wal.set_hard_state(HardState(2, 2))
        wal.append([Entry(2, 2, b"b")])

        class Killed(BaseException):
            pass

        def killed(fd: int) -> None:
            raise Killed

        with monkeypatch.context() as patch, pytest.raises(Killed):
            patch.setattr(os, "fsync", killed)
            wal.sync()


def test_open_fsyncs_the_log_before_it_returns_what_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unsynced_batch(tmp_path, monkeypatch)
    seen = _fsyncs_of_regular_files(monkeypatch)
    with WalStorage.open(tmp_path) as wal:
        # The unsynced batch was read back and is now trusted: it must be durable already.
        assert wal.load().hard_state == HardState(2, 2)
        assert "file" in seen, f"open trusted page-cache bytes without an fsync: {seen}"
        assert "dir" in seen, f"open did not make the log's name durable: {seen}"


def test_open_fsyncs_even_a_clean_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with WalStorage.open(tmp_path) as wal:
        wal.append([Entry(1, 1, b"a")])
        wal.sync()
    seen = _fsyncs_of_regular_files(monkeypatch)
    with WalStorage.open(tmp_path) as wal:
        assert wal.load().entries == (Entry(1, 1, b"a"),)
    assert seen.count("file") >= 1
