"""WalStorage: what survives a restart, what a crash may cost, and what must stop the node.

The recovery tests damage real files byte by byte, because the line between "torn tail, cut
it off" and "corruption, refuse to start" is only as good as the cases it was tried on. The
format is rebuilt here with struct and zlib rather than imported, so a change to the
on-disk layout shows up as a failing test instead of passing silently on both sides.
"""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import raftd
from raftd.core import DurableState, Entry, EntryKind, HardState, Ready
from raftd.storage import (
    CorruptLogError,
    DataDirLocked,
    MemoryStorage,
    Storage,
    StorageError,
    WalStorage,
    stage_ready,
)
from raftd.storage import wal as wal_module

MAGIC = b"RAFTWAL3" + struct.pack(">QQ", 1, 1)  # segment 1, starting with batch 1
MAGIC += struct.pack(">I", zlib.crc32(MAGIC))
BATCH_HEADER = 21  # mark 0xBA, seq u64, body length u32, crc32(body) u32, crc32(header) u32
HEADER = 9  # type u8, length u32, crc u32
ENTRY_HEAD = 17  # index u64, term u64, kind u8
COMMIT = b"\xc5"


def record(record_type: int, payload: bytes) -> bytes:
    prefix = struct.pack(">BI", record_type, len(payload))
    crc = zlib.crc32(prefix + payload)
    return prefix + struct.pack(">I", crc) + payload


def entry_record(index: int, term: int, data: bytes, kind: int = 0) -> bytes:
    return record(2, struct.pack(">QQB", index, term, kind) + data)


def hard_state_record(term: int, voted_for: int | None) -> bytes:
    return record(1, struct.pack(">Qq", term, -1 if voted_for is None else voted_for))


def batch(seq: int, *records: bytes) -> bytes:
    """One sync's worth of records, framed as the log writes it."""
    body = b"".join(records)
    head = struct.pack(">BQII", 0xBA, seq, len(body), zlib.crc32(body))
    return head + struct.pack(">I", zlib.crc32(head)) + body + COMMIT


def run(first: int, *terms: int, tag: str = "e") -> tuple[Entry, ...]:
    return tuple(
        Entry(first + offset, term, f"{tag}{first + offset}".encode())
        for offset, term in enumerate(terms)
    )


class Logs(list[str]):
    """Collects warning lines; a list subclass so it doubles as the ``logger`` callable."""

    def __call__(self, line: str) -> None:
        self.append(line)


def wal_file(data_dir: Path) -> Path:
    return data_dir / "wal-00000001.log"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "node1"


# ----------------------------------------------------------------- round trips


def test_synced_state_survives_reopen(data_dir: Path) -> None:
    with WalStorage.open(data_dir) as wal:
        wal.set_hard_state(HardState(3, 2))
        wal.append(run(1, 1, 1, 3))
        wal.append([Entry(4, 3, b"", EntryKind.NOOP)])
        wal.sync()
        expected = wal.load()
    assert expected == DurableState(
        HardState(3, 2), (*run(1, 1, 1, 3), Entry(4, 3, b"", EntryKind.NOOP))
    )
    with WalStorage.open(data_dir) as wal:
        assert wal.load() == expected


def test_a_fresh_directory_gets_a_header_and_a_lock_naming_us(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    with WalStorage.open(data_dir) as wal:
        assert wal.load() == DurableState()
        assert wal_file(data_dir).read_bytes() == MAGIC
        assert (data_dir / "LOCK").read_text().strip() == str(os.getpid())
    assert not [p for p in data_dir.iterdir() if p.name.endswith(".tmp")]


def test_the_file_holds_exactly_the_documented_records(data_dir: Path) -> None:
    with WalStorage.open(data_dir) as wal:
        wal.append([Entry(1, 1, b"x"), Entry(2, 1, b"", EntryKind.NOOP)])
        wal.set_hard_state(HardState(1, None))
        wal.sync()
        wal.append([Entry(2, 2, b"yz")])
        wal.set_hard_state(HardState(2, 7))
        wal.sync()
    assert wal_file(data_dir).read_bytes() == (
        MAGIC
        # One batch per sync, its hard state first whatever order it was staged in.
        + batch(
            1,
            hard_state_record(1, None),
            entry_record(1, 1, b"x"),
            entry_record(2, 1, b"", kind=1),
        )
        + batch(2, hard_state_record(2, 7), entry_record(2, 2, b"yz"))
    )


def test_staged_writes_are_not_durable_until_sync(data_dir: Path) -> None:
    with WalStorage.open(data_dir) as wal:
        wal.append(run(1, 1))
        wal.sync()
        wal.append(run(2, 1))
        wal.set_hard_state(HardState(5, None))
        assert wal.load() == DurableState(entries=run(1, 1))
        size = wal_file(data_dir).stat().st_size
    # Closing without sync behaves like a crash: the staged writes are gone.
    assert wal_file(data_dir).stat().st_size == size
    with WalStorage.open(data_dir) as wal:
        assert wal.load() == DurableState(entries=run(1, 1))


def test_a_sync_with_nothing_staged_writes_nothing(data_dir: Path) -> None:
    with WalStorage.open(data_dir) as wal:
        wal.sync()
        assert wal_file(data_dir).read_bytes() == MAGIC


def test_it_is_a_storage_that_stage_ready_can_drive(data_dir: Path) -> None:
    storage: Storage = WalStorage.open(data_dir)
    ready = Ready(
        hard_state=HardState(4, 1),
        entries=run(1, 4, 4),
        messages=(),
        committed=(),
        events=(),
    )
    stage_ready(storage, ready)
    storage.sync()
    assert storage.load() == DurableState(HardState(4, 1), run(1, 4, 4))
    assert isinstance(storage, WalStorage)
    storage.close()


# ----------------------------------------------------------------- rewrites and gaps


def test_a_rewritten_suffix_replays_as_the_new_entries(data_dir: Path) -> None:
    with WalStorage.open(data_dir) as wal:
        wal.append(run(1, 1, 1, 1, 1, 1))
        wal.sync()
        wal.append(run(3, 2, 2, tag="new"))  # a new leader overwrites 3..6 with 3..4
        wal.sync()
        # Within one unsynced batch too: 4 is staged, then replaced before the sync.
        wal.append(run(5, 2))
        wal.append(run(4, 3, 3, tag="newer"))
        wal.sync()
        expected = (*run(1, 1, 1), *run(3, 2, tag="new"), *run(4, 3, 3, tag="newer"))
        assert wal.load().entries == expected
    with WalStorage.open(data_dir) as wal:
        assert wal.load().entries == expected


@pytest.mark.parametrize(
    "entries",
    [
        pytest.param(run(4, 1), id="gap after the log"),
        pytest.param(run(0, 1), id="index zero"),
        pytest.param((Entry(3, 1), Entry(5, 1)), id="gap inside the batch"),
        pytest.param((Entry(3, 1), Entry(3, 1)), id="repeat inside the batch"),
    ],
)
def test_an_append_that_would_leave_a_gap_is_refused(
    data_dir: Path, entries: tuple[Entry, ...]
) -> None:
    with WalStorage.open(data_dir) as wal:
        wal.append(run(1, 1, 1))
        with pytest.raises(StorageError):
            wal.append(entries)
        wal.sync()
        assert wal.load().entries == run(1, 1, 1)
    with WalStorage.open(data_dir) as wal:
        assert wal.load().entries == run(1, 1, 1)


def test_values_the_format_cannot_hold_are_refused_when_staged(data_dir: Path) -> None:
    with WalStorage.open(data_dir) as wal:
        with pytest.raises(StorageError):
            wal.set_hard_state(HardState(1, -2))
        with pytest.raises(StorageError):
            wal.set_hard_state(HardState(2**64, None))
        with pytest.raises(StorageError):
            wal.append([Entry(1, -1)])
        wal.sync()
        assert wal.load() == DurableState()


# ----------------------------------------------------------------- the directory lock


def test_a_second_open_of_a_locked_directory_is_refused(data_dir: Path) -> None:
    first = WalStorage.open(data_dir)
    # flock belongs to the open file description, so even this process cannot open it twice.
    with pytest.raises(DataDirLocked) as caught:
        WalStorage.open(data_dir)
    assert str(data_dir) in str(caught.value)
    assert f"pid {os.getpid()}" in str(caught.value)
    first.close()
    with WalStorage.open(data_dir) as wal:
        assert wal.load() == DurableState()


def test_another_process_holding_the_directory_is_named(data_dir: Path) -> None:
    holder = (
        "import sys\n"
        "from pathlib import Path\n"
        "from raftd.storage import WalStorage\n"
        "with WalStorage.open(Path(sys.argv[1])):\n"
        "    print('locked', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    repo_root = Path(raftd.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    with subprocess.Popen(
        [sys.executable, "-c", holder, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        try:
            assert proc.stdout.readline() == "locked\n"
            with pytest.raises(DataDirLocked, match=f"pid {proc.pid}"):
                WalStorage.open(data_dir)
        finally:
            proc.stdin.close()
            assert proc.wait(timeout=60) == 0
    with WalStorage.open(data_dir) as wal:
        assert wal.load() == DurableState()


# ----------------------------------------------------------------- recovery: torn tails


def build_log(data_dir: Path) -> tuple[DurableState, int]:
    """A log whose last record is one entry; returns the state before it and where it starts."""
    with WalStorage.open(data_dir) as wal:
        wal.set_hard_state(HardState(2, 1))
        wal.append(run(1, 1, 1, 2))
        wal.sync()
        before = wal.load()
        last_start = wal_file(data_dir).stat().st_size
        wal.append([Entry(4, 2, b"the last entry, torn in every possible place")])
        wal.sync()
    return before, last_start


def test_a_tail_torn_at_any_byte_is_cut_off_and_the_log_goes_on(tmp_path: Path) -> None:
    before, good_end = build_log(tmp_path / "original")
    full = wal_file(tmp_path / "original").read_bytes()
    for cut in range(good_end + 1, len(full)):
        data_dir = tmp_path / f"cut{cut}"
        data_dir.mkdir()
        wal_file(data_dir).write_bytes(full[:cut])
        logs = Logs()
        with WalStorage.open(data_dir, logger=logs) as wal:
            assert wal.load() == before, cut
            assert len(logs) == 1, cut
            assert f"dropped {cut - good_end} bytes" in logs[0]
            assert f"offset {good_end}" in logs[0]
            assert wal_file(data_dir).read_bytes() == full[:good_end]
            wal.append(run(4, 3, tag="after"))
            wal.sync()
        logs.clear()
        with WalStorage.open(data_dir, logger=logs) as wal:
            assert wal.load().entries == (*before.entries, *run(4, 3, tag="after"))
            assert logs == []


@pytest.mark.parametrize("bit", [0x01, 0x80])
def test_a_bit_flip_anywhere_in_the_last_acknowledged_batch_refuses_to_start(
    tmp_path: Path, bit: int
) -> None:
    """Format 1 cut a last record failing its checksum as a torn tail, although
    it was complete, non-zero and fsynced: an acknowledged entry was silently dropped."""
    original = tmp_path / "original"
    _, last_start = build_log(original)
    full = wal_file(original).read_bytes()
    for offset in range(last_start, len(full)):
        data_dir = tmp_path / f"flip{offset}"
        data_dir.mkdir()
        damaged = bytearray(full)
        damaged[offset] ^= bit
        wal_file(data_dir).write_bytes(damaged)
        with pytest.raises(CorruptLogError) as caught:
            WalStorage.open(data_dir)
        message = str(caught.value)
        assert str(wal_file(data_dir)) in message and "untouched" in message, offset
        assert wal_file(data_dir).read_bytes() == damaged


@pytest.mark.parametrize("damage_last", [False, True])
def test_a_zeroed_tail_is_cut_off(tmp_path: Path, damage_last: bool) -> None:
    data_dir = tmp_path / "n"
    build_log(data_dir)
    with WalStorage.open(data_dir) as wal:
        state = wal.load()
    good = bytearray(wal_file(data_dir).read_bytes())
    if damage_last:  # a torn last batch (its last bytes never arrived), then preallocated zeros
        good[-5:] = bytes(5)
        state = DurableState(state.hard_state, state.entries[:-1])
    wal_file(data_dir).write_bytes(bytes(good) + bytes(4096))
    logs = Logs()
    with WalStorage.open(data_dir, logger=logs) as wal:
        assert wal.load() == state
    assert len(logs) == 1 and "dropped" in logs[0]
    assert wal_file(data_dir).stat().st_size < len(good) + 4096


def test_a_header_cut_short_is_completed(data_dir: Path) -> None:
    data_dir.mkdir()
    wal_file(data_dir).write_bytes(MAGIC[:3])
    logs = Logs()
    with WalStorage.open(data_dir, logger=logs) as wal:
        assert wal.load() == DurableState()
    assert wal_file(data_dir).read_bytes() == MAGIC
    assert len(logs) == 1


def test_without_a_logger_the_warning_goes_to_logging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "n"
    build_log(data_dir)
    with wal_file(data_dir).open("ab") as f:
        f.write(b"\x00\x00\x01")
    with WalStorage.open(data_dir):
        pass
    assert any("dropped 3 bytes" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------- recovery: corruption


def test_damage_anywhere_in_an_early_record_refuses_to_start(tmp_path: Path) -> None:
    original = tmp_path / "original"
    with WalStorage.open(original) as wal:
        wal.append(run(1, 1))
        wal.sync()
        first_end = wal_file(original).stat().st_size
        wal.set_hard_state(HardState(1, 1))
        wal.append(run(2, 1, 1))
        wal.sync()
    full = wal_file(original).read_bytes()
    first_start = len(MAGIC)
    # Every byte of the first batch, its header included: the batch after it proves it
    # was fsynced, so no change to it can be a torn write.
    for offset in range(first_start, first_end):
        data_dir = tmp_path / f"flip{offset}"
        data_dir.mkdir()
        damaged = bytearray(full)
        damaged[offset] ^= 0x01
        wal_file(data_dir).write_bytes(damaged)
        with pytest.raises(CorruptLogError) as caught:
            WalStorage.open(data_dir)
        message = str(caught.value)
        assert str(wal_file(data_dir)) in message
        named = int(message.split("offset ")[1].split(":")[0])
        assert first_start <= named <= offset, message  # the damaged piece, or its batch
        assert "untouched" in message
        assert wal_file(data_dir).read_bytes() == damaged
        # The refusal released the lock: after a repair the node can start.
        wal_file(data_dir).write_bytes(full)
        with WalStorage.open(data_dir) as wal:
            assert len(wal.load().entries) == 3


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        pytest.param(
            entry_record(1, 1, b"a") + entry_record(3, 1, b"c") + entry_record(4, 1, b"d"),
            "does not follow",
            id="index gap",
        ),
        pytest.param(
            entry_record(1, 1, b"a") + entry_record(3, 1, b"c"),
            "does not follow",
            id="gap at the end",
        ),
        pytest.param(entry_record(0, 1, b"a"), "does not follow", id="index zero"),
        pytest.param(entry_record(1, 1, b"a", kind=9), "unknown kind", id="entry kind"),
        pytest.param(record(7, b"what") + entry_record(1, 1, b"a"), "record type", id="type"),
        pytest.param(record(1, b"short"), "hard state record", id="hard state size"),
        pytest.param(record(2, b"short"), "entry record", id="entry size"),
        pytest.param(hard_state_record(1, -5), "votes for", id="negative vote"),
    ],
)
def test_a_whole_record_that_makes_no_sense_refuses_to_start(
    data_dir: Path, records: bytes, reason: str
) -> None:
    # Its checksum holds, so no torn write produced it: dropping it, even at the end of the
    # file, would discard data that was written in full.
    data_dir.mkdir()
    content = MAGIC + batch(1, records)
    wal_file(data_dir).write_bytes(content)
    with pytest.raises(CorruptLogError, match=reason):
        WalStorage.open(data_dir)
    assert wal_file(data_dir).read_bytes() == content


def test_an_oversized_length_is_corruption_inside_the_file_and_torn_past_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal_module, "MAX_RECORD_PAYLOAD", 64)
    big = entry_record(1, 1, bytes(range(1, 100)))
    inside = tmp_path / "inside"
    inside.mkdir()
    wal_file(inside).write_bytes(MAGIC + batch(1, big, entry_record(2, 1, b"b")))
    with pytest.raises(CorruptLogError, match="exceeds"):
        WalStorage.open(inside)
    past_end = tmp_path / "past_end"
    past_end.mkdir()
    wal_file(past_end).write_bytes(MAGIC + batch(1, entry_record(1, 1, b"a")) + batch(2, big)[:50])
    logs = Logs()
    with WalStorage.open(past_end, logger=logs) as wal:
        assert wal.load().entries == (Entry(1, 1, b"a"),)
    assert "dropped 50 bytes" in logs[0]


def test_zeros_followed_by_data_are_a_hole_not_a_tail(data_dir: Path) -> None:
    data_dir.mkdir()
    first = MAGIC + batch(1, entry_record(1, 1, b"a"))
    content = first + bytes(64) + batch(2, entry_record(2, 1, b"b"))
    wal_file(data_dir).write_bytes(content)
    with pytest.raises(CorruptLogError, match=f"offset {len(first)}:"):
        WalStorage.open(data_dir)
    assert wal_file(data_dir).read_bytes() == content


def test_a_file_with_the_wrong_magic_is_refused(data_dir: Path) -> None:
    data_dir.mkdir()
    wal_file(data_dir).write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(StorageError, match="not a raftd log segment"):
        WalStorage.open(data_dir)
    assert wal_file(data_dir).read_bytes().startswith(b"SQLite")
    wal_file(data_dir).unlink()
    (data_dir / "raft.wal").write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(StorageError, match="not a raftd write-ahead log"):
        WalStorage.open(data_dir)
    assert (data_dir / "raft.wal").read_bytes().startswith(b"SQLite")


# ----------------------------------------------------------------- failures


def test_a_failed_fsync_poisons_the_store(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = WalStorage.open(data_dir)
    wal.append(run(1, 1))

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StorageError, match="restart"):
        wal.sync()
    monkeypatch.undo()
    # The kernel may have dropped the pages: retrying the fsync could report a false success.
    with pytest.raises(StorageError):
        wal.sync()
    with pytest.raises(StorageError):
        wal.append(run(2, 1))
    wal.close()
    with pytest.raises(StorageError, match="closed"):
        wal.load()


# The batch is a 21-byte header, a 25-byte hard state record, then entry records.
@pytest.mark.parametrize("fits", [0, 1, 7, 21, 46, 60])
def test_a_full_disk_stops_the_store_and_a_restart_keeps_every_synced_entry(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, fits: int
) -> None:
    """ENOSPC part-way through a batch: whatever prefix made it is a torn tail to the next
    start, cut whole (even where the prefix ends between records: a batch is kept or dropped
    as one), and everything synced before is still there."""
    wal = WalStorage.open(data_dir)
    wal.set_hard_state(HardState(1, 1))
    wal.append(run(1, 1, 1, 1))
    wal.sync()
    real_write = os.write
    room = [fits]  # bytes the disk still has

    def disk_fills_up(fd: int, data: bytes | memoryview) -> int:
        if not room[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data)[: room[0]])  # what still fits
        room[0] -= written
        return written

    monkeypatch.setattr(os, "write", disk_fills_up)
    wal.set_hard_state(HardState(2, 1))
    wal.append(run(4, 2, 2, tag="unsynced"))
    with pytest.raises(StorageError, match="No space left on device"):
        wal.sync()
    monkeypatch.undo()
    with pytest.raises(StorageError, match="restart"):
        wal.append(run(6, 2))
    wal.close()
    logs = Logs()
    with WalStorage.open(data_dir, logger=logs) as reopened:
        state = reopened.load()
    assert state == DurableState(HardState(1, 1), run(1, 1, 1, 1))
    if fits:  # part of a batch: a torn tail, cut off with a warning
        assert logs and "torn" in logs[0]
    else:
        assert not logs


# ----------------------------------------------------------------- against the reference

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.integers(0, 4),  # how far before the staged end the batch starts (rewrites)
            st.integers(1, 4),  # batch length
            st.integers(1, 5),  # term
            st.sampled_from(list(EntryKind)),
            st.binary(max_size=12),
        ),
        st.tuples(st.just("hard_state"), st.integers(0, 9), st.none() | st.integers(0, 4)),
        st.tuples(st.just("gap")),
        st.tuples(st.just("sync")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("crash")),
    ),
    max_size=40,
)


@settings(
    derandomize=True,
    database=None,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(operations=OPERATIONS)
def test_it_behaves_like_memory_storage(
    tmp_path: Path, operations: list[tuple[object, ...]]
) -> None:
    data_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    memory = MemoryStorage()
    wal = WalStorage.open(data_dir)
    staged_last = 0
    try:
        for operation in operations:
            match operation:
                case ("append", int(back), int(count), int(term), EntryKind() as kind, bytes(data)):
                    first = max(1, staged_last + 1 - back)
                    batch = [Entry(first + i, term, data, kind) for i in range(count)]
                    memory.append(batch)
                    wal.append(batch)
                    staged_last = batch[-1].index
                case ("hard_state", int(term), voted_for):
                    assert voted_for is None or isinstance(voted_for, int)
                    memory.set_hard_state(HardState(term, voted_for))
                    wal.set_hard_state(HardState(term, voted_for))
                case ("gap",):
                    gap = [Entry(staged_last + 2, 1)]
                    with pytest.raises(StorageError):
                        memory.append(gap)
                    with pytest.raises(StorageError):
                        wal.append(gap)
                case ("sync",):
                    memory.sync()
                    wal.sync()
                case ("reopen",):
                    memory.sync()
                    wal.sync()
                    wal.close()
                    wal = WalStorage.open(data_dir)
                case ("crash",):
                    # Staged writes only ever live in the process, so a crash loses all of
                    # them, exactly as MemoryStorage.crash models.
                    memory.crash()
                    wal.close()
                    wal = WalStorage.open(data_dir)
                    staged_last = memory.last_index
                case _:
                    raise AssertionError(operation)
            assert wal.load() == memory.load()
        wal.sync()
        memory.sync()
        wal.close()
        with WalStorage.open(data_dir) as reopened:
            assert reopened.load() == memory.load()
    finally:
        wal.close()


def test_trace_contexts_survive_a_restart(tmp_path: Path) -> None:
    """Entries proposed in a sampled trace keep their traceparent on disk, so a member that
    restarts still joins the right trace when it applies them."""
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    entries = [Entry(1, 1, b"a"), Entry(2, 1, b"b", EntryKind.NORMAL, parent), Entry(3, 1)]
    with WalStorage.open(tmp_path) as storage:
        storage.append(entries)
        storage.sync()
    with WalStorage.open(tmp_path) as storage:
        assert storage.load().entries == tuple(entries)
