"""Every crash state of the last batches, enumerated (the ALICE/CrashMonkey idea).

A member must never lose an acknowledged (fsynced) entry or vote, must never keep records
that follow a gap, and must always start after a crash. ``PageCacheDisk`` lets a test
play each state a power cut can leave: the file cut at every byte between its synced and
written length, each unsynced page kept, lost or torn, in any combination.

``RAFTD_WAL_CRASH_FULL=1`` widens the enumeration (every torn byte of every page, every
length for every page subset); the default is the short form run by ``make test``.
"""

from __future__ import annotations

import copy
import itertools
import os
from pathlib import Path

import pytest

from raftd.core.types import DurableState, Entry, HardState
from raftd.storage.pagecache import PageCacheDisk, ProcessKilled
from raftd.storage.wal import CorruptLogError, WalStorage, segment_name

DATA_DIR = Path("member")
PATH = DATA_DIR / segment_name(1)
PAGE = 512
FULL = os.environ.get("RAFTD_WAL_CRASH_FULL") == "1"

ACKED = DurableState(
    HardState(2, 3),
    tuple(Entry(i, 1 + i // 3, bytes([i]) * (100 + 90 * i)) for i in range(1, 7)),
)
# The batch in flight: a new vote and entries that replace the acknowledged suffix from 5.
UNSYNCED_HARD_STATE = HardState(3, 1)
UNSYNCED = tuple(Entry(i, 3, bytes([i + 50]) * 700) for i in range(5, 9))
AFTER = DurableState(UNSYNCED_HARD_STATE, ACKED.entries[:4] + UNSYNCED)


def _crashed_in_the_last_fsync() -> PageCacheDisk:
    """Two acknowledged batches, then a multi-page batch written but killed in its fsync."""
    disk = PageCacheDisk(PAGE)
    wal = WalStorage.open(DATA_DIR, fs=disk, logger=lambda line: None)
    wal.set_hard_state(HardState(1, None))
    wal.append(ACKED.entries[:3])
    wal.sync()
    wal.set_hard_state(ACKED.hard_state)
    wal.append(ACKED.entries[3:])
    wal.sync()
    wal.set_hard_state(UNSYNCED_HARD_STATE)
    wal.append(UNSYNCED)
    disk.kill_at_next_sync()
    with pytest.raises(ProcessKilled):
        wal.sync()
    disk.kill_process()
    assert len(disk.dirty_pages(PATH)) >= 4
    return disk


BEFORE = _crashed_in_the_last_fsync()


def _recover(length: int, kept: dict[int, int]) -> DurableState:
    disk = copy.deepcopy(BEFORE)
    disk.power_cut(PATH, length, kept)
    warnings: list[str] = []
    with WalStorage.open(DATA_DIR, fs=disk, logger=warnings.append) as wal:
        state = wal.load()
    # What it found is now durable: a second power cut cannot take it back.
    with WalStorage.open(DATA_DIR, fs=disk, logger=warnings.append) as wal:
        assert wal.load() == state
    return state


def _check(length: int, kept: dict[int, int]) -> None:
    state = _recover(length, kept)
    # Either the batch is whole or it is gone whole: nothing after a gap, nothing acked lost.
    assert state in (ACKED, AFTER), (length, kept, state.hard_state, len(state.entries))


def test_every_cut_point_of_the_last_batch_recovers_to_before_or_after_it() -> None:
    low, high = BEFORE.length_range(PATH)
    assert high - low > 3 * PAGE
    for length in range(low, high + 1):
        _check(length, {})


def test_every_subset_of_lost_pages_recovers_to_before_or_after_the_batch() -> None:
    low, high = BEFORE.length_range(PATH)
    pages = BEFORE.dirty_pages(PATH)
    lengths = range(low, high + 1) if FULL else sorted({low, (low + high) // 2, high - 1, high})
    for lost in itertools.product((False, True), repeat=len(pages)):
        kept = {page: 0 for page, gone in zip(pages, lost, strict=True) if gone}
        for length in lengths:
            _check(length, kept)


def test_a_page_torn_at_any_byte_recovers_to_before_or_after_the_batch() -> None:
    high = BEFORE.length_range(PATH)[1]
    pages = BEFORE.dirty_pages(PATH)
    step = 1 if FULL else 7
    for page in pages:
        for keep in range(1, PAGE, step):
            _check(high, {page: keep})
            _check(high, {page: keep, pages[-1]: 0})


def test_a_bit_flip_in_the_last_acknowledged_record_is_corruption_not_a_tear() -> None:
    """Whole, non-zero bytes failing their checksum in the last, fsynced batch: refused,
    not cut (it used to be cut silently as a torn tail). The residual ambiguity the WAL's
    docstring names (a record's own zero bytes ending a block) is kept out of this case."""
    disk = PageCacheDisk(PAGE)
    last = Entry(7, 2, b"\x77" * (3 * PAGE))
    with WalStorage.open(DATA_DIR, fs=disk) as wal:
        wal.set_hard_state(ACKED.hard_state)
        wal.append(ACKED.entries)
        wal.sync()
        wal.append([last])
        wal.sync()
    content = bytearray(disk.read(PATH))
    content[-PAGE] ^= 0x10  # inside the data of the last entry
    disk.write(PATH, bytes(content))
    with pytest.raises(CorruptLogError, match=str(PATH)):
        WalStorage.open(DATA_DIR, fs=disk)
    assert disk.read(PATH) == bytes(content)  # left as found


def test_a_kill_without_power_loss_keeps_the_batch_and_makes_it_durable() -> None:
    """kill -9 inside the fsync: the page cache survives, and open fsyncs it before use."""
    disk = copy.deepcopy(BEFORE)
    with WalStorage.open(DATA_DIR, fs=disk) as wal:
        assert wal.load() == AFTER
    low, high = disk.length_range(PATH)
    assert low == high and disk.dirty_pages(PATH) == []
