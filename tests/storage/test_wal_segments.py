"""The log as segments, with snapshots beside it: rolling, compaction, installs, migration.

Most stories run on the page-cache disk, where a power cut can also undo a deletion whose
directory was not fsynced yet; a few run on the real file system, where the names are real.
"""

from __future__ import annotations

import random
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from raftd.core import DurableState, Entry, HardState
from raftd.core.types import Snapshot, SnapshotMeta
from raftd.storage import CorruptLogError, StorageError, WalStorage, snapfile
from raftd.storage.pagecache import PageCacheDisk
from raftd.storage.wal import (
    RECORD_BASE,
    SEGMENT_HEADER_SIZE,
    encode_batch,
    segment_header,
    segment_name,
)

DIR = Path("member")
VOTERS = (1, 2, 3)


def entries(first: int, last: int, term: int = 1, size: int = 40) -> list[Entry]:
    return [Entry(i, term, f"v{i}".encode().ljust(size, b".")) for i in range(first, last + 1)]


def write(wal: WalStorage, first: int, last: int, term: int = 1) -> None:
    for entry in entries(first, last, term):
        wal.append([entry])
        wal.sync()


def snapshot(index: int, term: int = 1) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, VOTERS), f"state@{index}".encode())


def segments(disk: PageCacheDisk) -> list[str]:
    return [n for n in disk.list_names(DIR) if n.startswith("wal-")]


def open_wal(disk: PageCacheDisk, logs: list[str] | None = None) -> WalStorage:
    sink = logs if logs is not None else []
    return WalStorage.open(DIR, fs=disk, segment_bytes=1024, logger=sink.append)


def test_the_log_rolls_into_segments_that_replay_as_one_log() -> None:
    disk = PageCacheDisk()
    wal = open_wal(disk)
    wal.set_hard_state(HardState(3, 2))
    write(wal, 1, 60)
    names = segments(disk)
    assert len(names) > 3 and names[0] == segment_name(1)
    expected = wal.load()
    wal.close()
    disk.kill_process()
    again = open_wal(disk)
    assert again.load() == expected
    assert [e.index for e in again.load().entries] == list(range(1, 61))
    # Every segment but the first opens with the hard state and where the log stands.
    second = disk.read(DIR / names[1])
    assert second[:SEGMENT_HEADER_SIZE] == segment_header(2, struct.unpack(">Q", second[16:24])[0])
    assert struct.unpack_from(">B", second, SEGMENT_HEADER_SIZE + 21)[0] == 1  # hard state
    again.close()


def test_compaction_deletes_the_segments_a_snapshot_covers_and_a_restart_keeps_the_rest() -> None:
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 60)
    before = segments(disk)
    wal.save_snapshot(snapshot(50))
    wal.compact(45)
    after = segments(disk)
    assert len(after) < len(before) and after[-1] == before[-1]
    state = wal.load()
    assert state.snapshot == snapshot(50) and state.snapshot_index == 45
    wal.close()
    disk.kill_process()
    reopened = open_wal(disk).load()
    # On disk the log starts where the oldest segment kept does: at or before 45.
    assert reopened.snapshot == snapshot(50)
    assert reopened.snapshot_index <= 45 < reopened.entries[0].index + 1
    assert reopened.entries[-1].index == 60
    assert [e.index for e in reopened.entries] == list(range(reopened.snapshot_index + 1, 61))


def test_a_snapshot_rolls_the_log_so_a_restart_replays_only_the_entries_after_it() -> None:
    # With a segment limit no batch reaches, the log would otherwise stay one segment and a
    # restart would replay every entry ever written, however often a snapshot was taken.
    disk = PageCacheDisk()
    logs: list[str] = []
    wal = WalStorage.open(DIR, fs=disk, segment_bytes=1 << 30, logger=logs.append)
    for round_ in range(5):
        first = round_ * 100 + 1
        write(wal, first, first + 99)
        wal.save_snapshot(snapshot(first + 99))
        wal.compact(first + 99 - 20)  # a trailing window of 20 entries
    write(wal, 501, 510)
    assert len(segments(disk)) == 2
    wal.close()
    disk.kill_process()
    reopened = open_wal(disk).load()
    assert reopened.snapshot == snapshot(500)
    # The replay starts where the segment opened after the snapshot at 400 does.
    assert reopened.snapshot_index == 400
    assert [e.index for e in reopened.entries] == list(range(401, 511))


def test_the_log_syncs_while_a_snapshot_file_is_being_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A follower syncs in its loop's thread: behind a snapshot of a large store that took
    seconds to write, the whole member froze and its election timer fired."""
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 20)
    writing, release = threading.Event(), threading.Event()
    write_file = wal._write_snapshot_file

    def slow_write(snap: Snapshot) -> None:
        writing.set()
        assert release.wait(10)
        write_file(snap)

    monkeypatch.setattr(wal, "_write_snapshot_file", slow_write)
    saver = threading.Thread(target=wal.save_snapshot, args=(snapshot(15),))
    saver.start()
    assert writing.wait(10)
    synced = threading.Thread(target=lambda: write(wal, 21, 25))
    synced.start()
    synced.join(5)
    stuck = synced.is_alive()
    release.set()
    saver.join(10)
    synced.join(10)
    assert not stuck, "a sync of the log waited for the snapshot file"
    assert wal.load().snapshot == snapshot(15)
    assert [e.index for e in wal.load().entries][-1] == 25


def test_only_the_newest_two_snapshot_files_are_kept() -> None:
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 30)
    for index in (10, 20, 30):
        wal.save_snapshot(snapshot(index))
    names = [n for n in disk.list_names(DIR) if n.endswith(".snap")]
    assert names == [snapfile.file_name(snapshot(i).meta) for i in (20, 30)]
    with pytest.raises(StorageError, match="older"):
        wal.save_snapshot(snapshot(25))
    wal.close()


def test_a_damaged_newest_snapshot_falls_back_while_the_log_reaches_back() -> None:
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 60)
    wal.save_snapshot(snapshot(20))
    wal.save_snapshot(snapshot(50))
    wal.compact(15)  # the log still starts at or before 20
    wal.close()
    disk.kill_process()
    newest = DIR / snapfile.file_name(snapshot(50).meta)
    damaged = bytearray(disk.read(newest))
    damaged[30] ^= 0x40
    disk.write(newest, bytes(damaged))
    logs: list[str] = []
    state = open_wal(disk, logs).load()
    assert state.snapshot == snapshot(20)
    assert any("fails its checksum" in line and "older snapshot" in line for line in logs)


def test_a_damaged_snapshot_the_log_no_longer_covers_refuses_to_start() -> None:
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 60)
    wal.save_snapshot(snapshot(50))
    wal.compact(50)
    wal.close()
    disk.kill_process()
    path = DIR / snapfile.file_name(snapshot(50).meta)
    disk.write(path, disk.read(path)[:-5])  # truncated
    with pytest.raises(StorageError, match="a snapshot of at least that entry is needed"):
        open_wal(disk)


def test_an_installed_snapshot_replaces_the_log_and_survives_a_restart() -> None:
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 10)
    wal.install_snapshot(snapshot(80, 3))
    wal.append(entries(81, 82, term=3))
    wal.sync()
    state = wal.load()
    assert (state.snapshot_index, state.snapshot_term) == (80, 3)
    assert [e.index for e in state.entries] == [81, 82]
    wal.close()
    disk.kill_process()
    assert open_wal(disk).load() == state


def test_a_crash_before_the_install_was_synced_keeps_the_old_log() -> None:
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 10)
    wal.install_snapshot(snapshot(80, 3))
    disk.kill_process()  # staged only: nothing reached the disk
    state = open_wal(disk).load()
    assert state.snapshot is None and state.entries[-1].index == 10


def test_a_deletion_a_power_cut_undid_leaves_a_valid_log() -> None:
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 60)
    wal.save_snapshot(snapshot(50))
    removed_before = len(segments(disk))
    # The deletions' directory fsync never happens: a power cut brings the files back.
    disk.sync_dir = lambda path: None  # type: ignore[method-assign]
    wal.compact(50)
    assert len(segments(disk)) < removed_before
    disk.undo_removals()
    disk.kill_process()
    del disk.sync_dir
    state = open_wal(disk).load()
    assert state.snapshot == snapshot(50) and state.entries[-1].index == 60


def test_a_rewrite_below_the_oldest_kept_segments_base_replays() -> None:
    """Entries 8-10 were replaced (a new leader) right after the log rolled at 10; once a
    snapshot covered them the segment before was deleted. The kept segment's base names the
    old term at 10, the rewrite the new one: the replay must end with the new."""
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 24)  # rolls at least once
    (*_, last) = segments(disk)
    wal.append(entries(23, 30, term=2))
    wal.sync()
    wal.save_snapshot(snapshot(28, 2))
    wal.compact(28)
    wal.close()
    disk.kill_process()
    state = open_wal(disk).load()
    assert state.entries[-1] == entries(30, 30, term=2)[0]
    assert all(e.term == 2 for e in state.entries if e.index >= 23)
    assert segments(disk)[0] <= last


def test_a_missing_middle_segment_refuses_to_start() -> None:
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 60)
    wal.close()
    disk.kill_process()
    disk.remove(DIR / segments(disk)[1])
    disk.sync_dir(DIR)
    with pytest.raises(CorruptLogError, match="segment 2 is missing"):
        open_wal(disk)


def test_a_format_2_log_is_migrated_to_segments(tmp_path: Path) -> None:
    data_dir = tmp_path / "member"
    data_dir.mkdir()
    hard_state = struct.pack(">Qq", 4, 2)
    body = struct.pack(">BI", 1, len(hard_state))
    body += struct.pack(">I", zlib.crc32(body + hard_state)) + hard_state
    for entry in entries(1, 5, term=4):
        payload = struct.pack(">QQB", entry.index, entry.term, 0) + entry.data
        head = struct.pack(">BI", 2, len(payload))
        body += head + struct.pack(">I", zlib.crc32(head + payload)) + payload
    (data_dir / "raft.wal").write_bytes(b"RAFTWAL2" + encode_batch(1, body))
    logs: list[str] = []
    with WalStorage.open(data_dir, logger=logs.append) as wal:
        state = wal.load()
        wal.append(entries(6, 6, term=4))
        wal.sync()
    assert state.hard_state == HardState(4, 2)
    assert list(state.entries) == entries(1, 5, term=4)
    assert not (data_dir / "raft.wal").exists()
    assert any("migrated 5 entries from log format 2" in line for line in logs)
    with WalStorage.open(data_dir) as wal:
        assert [e.index for e in wal.load().entries] == [1, 2, 3, 4, 5, 6]


def test_a_migration_cut_short_after_its_segment_was_written_finishes() -> None:
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 3)
    wal.close()
    disk.kill_process()
    disk.create(DIR / "raft.wal", b"RAFTWAL2")  # the old file the migration had yet to remove
    state = open_wal(disk).load()
    assert [e.index for e in state.entries] == [1, 2, 3]
    assert not disk.exists(DIR / "raft.wal")


def test_a_segment_whose_first_batch_does_not_say_where_it_starts_is_refused() -> None:
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 3)
    wal.close()
    disk.kill_process()
    body = bytearray()
    payload = struct.pack(">QQB", 4, 1, 0) + b"x"
    head = struct.pack(">BI", 2, len(payload))
    body += head + struct.pack(">I", zlib.crc32(head + payload)) + payload
    disk.create(DIR / segment_name(2), segment_header(2, 4) + encode_batch(4, body))
    with pytest.raises(CorruptLogError, match="does not say where it starts"):
        open_wal(disk)
    assert RECORD_BASE == 4


@pytest.mark.parametrize("seed", range(30))
def test_random_power_cuts_around_rolls_snapshots_and_compaction_keep_what_was_synced(
    seed: int,
) -> None:
    """Whatever a power cut keeps of unsynced bytes and undone deletions, the log reopens
    with every entry that was synced (in the log or under a snapshot)."""
    rng = random.Random(seed)
    disk = PageCacheDisk(page_bytes=256)
    wal = WalStorage.open(DIR, fs=disk, segment_bytes=700)
    synced = taken = 0
    for index in range(1, rng.randint(20, 80)):
        wal.append(entries(index, index))
        if rng.random() < 0.8:
            wal.sync()
            synced = index
        if rng.random() < 0.15 and synced > taken + 1:
            taken = rng.randint(taken + 1, synced)
            wal.save_snapshot(snapshot(taken))
            wal.compact(taken - rng.randint(0, 3))
    disk.crash(rng)
    state = WalStorage.open(DIR, fs=disk, segment_bytes=700).load()
    last = state.entries[-1].index if state.entries else state.snapshot_index
    covered = state.snapshot.meta.index if state.snapshot is not None else 0
    assert max(last, covered) >= synced
    if state.snapshot_index:
        assert state.snapshot is not None and state.snapshot.meta.index >= state.snapshot_index


def test_a_truncation_below_where_the_oldest_kept_segment_starts_replays() -> None:
    """Found by the simulator: segment 2 opened when the log ended at (17, term 2); a new
    leader then cut the log back to 16 in segment 3, and segment 4 opened at (16, term 3).
    Once a snapshot covered 17, segment 1 was deleted. Replaying from segment 2, the cut
    must move the log's start down to 16, or segment 4's start looks like damage."""
    disk = PageCacheDisk()
    wal = WalStorage.open(DIR, fs=disk, segment_bytes=1)  # one batch per segment
    for batch in (entries(1, 17, term=2), entries(18, 20, term=2)):
        wal.append(batch)
        wal.sync()
    for batch in (entries(16, 16, term=3), entries(17, 17, term=3)):
        wal.append(batch)
        wal.sync()
    wal.save_snapshot(snapshot(17, 3))
    wal.compact(17)
    assert segments(disk)[0] == segment_name(2)
    assert last_of(wal.load()) == (17, 3)
    wal.close()
    disk.kill_process()
    state = WalStorage.open(DIR, fs=disk, segment_bytes=1).load()
    assert last_of(state) == (17, 3)
    assert state.snapshot == snapshot(17, 3)


def last_of(state: DurableState) -> tuple[int, int]:
    if state.entries:
        return state.entries[-1].index, state.entries[-1].term
    return state.snapshot_index, state.snapshot_term


def test_a_snapshot_of_another_cluster_refuses_to_start() -> None:
    disk = PageCacheDisk()
    wal = WalStorage.open(DIR, fs=disk, cluster_id="blue")
    write(wal, 1, 5)
    wal.save_snapshot(snapshot(5))
    wal.close()
    disk.kill_process()
    with pytest.raises(StorageError, match=r"snapshot of cluster 'blue'.*cluster 'green'"):
        WalStorage.open(DIR, fs=disk, cluster_id="green")
    assert WalStorage.open(DIR, fs=disk, cluster_id="blue").load().snapshot == snapshot(5)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:20], id="truncated"),
        pytest.param(lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], id="bit-flip"),
        pytest.param(lambda b: b"NOTASNAP" + b[8:], id="foreign-file"),
    ],
)
def test_a_damaged_snapshot_file_is_refused_clearly(damage: Callable[[bytes], bytes]) -> None:
    content = snapfile.encode(snapshot(9), "raftd")
    with pytest.raises(snapfile.SnapshotFileError) as refused:
        snapfile.decode(damage(content), name="backup.snap")
    assert "backup.snap" in str(refused.value)
    assert snapfile.decode(content).snapshot == snapshot(9)


def test_a_snapshot_keeps_its_configuration_and_an_older_file_without_one_still_reads() -> None:
    # The simulator found it: snapshot files dropped the configuration, so a member
    # restarted from one forgot a learner added before it and stopped replicating to it.
    disk = PageCacheDisk()
    wal = open_wal(disk)
    write(wal, 1, 10)
    config = b'{"learners":[4],"voters":[1,2,3]}'
    wal.save_snapshot(Snapshot(SnapshotMeta(10, 1, VOTERS, config), b"state"))
    wal.close()
    disk.kill_process()
    reopened = open_wal(disk).load()
    assert reopened.snapshot is not None and reopened.snapshot.meta.config == config
    # A file written before configurations were kept has a four-item header.
    import cbor2

    meta_bytes = cbor2.dumps([7, 1, [1, 2, 3], "raftd"])
    head = snapfile.MAGIC + struct.pack(">I", len(meta_bytes)) + meta_bytes
    body = head + struct.pack(">Q", 3) + b"old"
    import hashlib

    legacy = snapfile.decode(body + hashlib.sha256(body).digest())
    assert legacy.snapshot.meta == SnapshotMeta(7, 1, (1, 2, 3), b"")
