"""Backup and restore, end to end: `raftctl snapshot save` under load, `raftd restore` into a
new three-member cluster, and every write acknowledged before the save is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trio

from tests.integration.harness import ROOT, Cluster
from tests.integration.test_cluster import Writer, get
from tests.integration.test_raftctl import raftctl


def raftd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftd", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip


async def test_a_backup_taken_under_load_restores_a_new_cluster_with_every_acknowledged_write(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    old = Cluster(tmp_path / "old", 3)
    for member in old.members.values():
        member.extra_args += ["--snapshot-entries", "100", "--snapshot-keep", "20"]
    await old.start(nursery)
    acknowledged: list[tuple[str, str, float]] = []  # key, value, when acknowledged
    stop = trio.Event()

    async def write(lane: int) -> None:
        writer = Writer(old)
        n = 0
        while not stop.is_set():
            key, value = f"lane{lane}-{n}", f"value {n} of lane {lane}"
            await writer.set(key, value, timeout_s=30)
            acknowledged.append((key, value, trio.current_time()))
            n += 1

    backup = tmp_path / "backup.snap"
    try:
        await old.wait_all_serving(timeout_s=30)
        async with trio.open_nursery() as writers:
            for lane in range(4):
                writers.start_soon(write, lane)
            await trio.sleep(1.0)
            asked_at = trio.current_time()
            code, out, err = await raftctl(old, "--output", "json", "snapshot", "save", str(backup))
            await trio.sleep(0.5)
            stop.set()
    finally:
        await old.shutdown()
    assert code == 0, err
    saved = json.loads(out)
    assert saved["file"] == str(backup) and saved["cluster_id"] == "raftd"
    assert saved["bytes"] == backup.stat().st_size and saved["index"] > 0
    before = [(k, v) for k, v, at in acknowledged if at < asked_at]
    assert len(before) > 100

    new = Cluster(tmp_path / "new", 3)
    for name, member in new.members.items():
        cluster_arg = new.command(name)[new.command(name).index("--cluster") + 1]
        restored = raftd(
            "restore", "--snapshot", str(backup), "--data-dir", str(member.data_dir),
            "--id", name, "--cluster", cluster_arg,
        )  # fmt: skip
        assert restored.returncode == 0, restored.stderr
        assert f"restored {name} in {member.data_dir}" in restored.stdout
    await new.start(nursery)
    try:
        leader = await new.wait_for_leader(timeout_s=30)
        for key, value in before:
            assert (await get(new, leader, key)).value == value, key
        writer = Writer(new)
        await writer.set("after-restore", "yes")
        assert (await get(new, leader, "after-restore")).value == "yes"
    finally:
        await new.shutdown()


def test_restore_refuses_a_damaged_backup_and_a_directory_in_use(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.snap"
    garbage.write_bytes(b"RAFTSNP1" + bytes(100))
    args = ["--data-dir", str(tmp_path / "n1"), "--id", "n1", "--cluster", "n1=127.0.0.1:1"]
    damaged = raftd("restore", "--snapshot", str(garbage), *args)
    assert damaged.returncode == 1
    assert "cannot restore from it" in damaged.stderr and "Traceback" not in damaged.stderr
    missing = raftd("restore", "--snapshot", str(tmp_path / "nope.snap"), *args)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    in_use = tmp_path / "n1"
    in_use.mkdir()
    (in_use / "wal-00000001.log").write_bytes(b"")
    from raftd.core import Snapshot, SnapshotMeta
    from raftd.kv import KVStore
    from raftd.storage import snapfile

    good = tmp_path / "good.snap"
    good.write_bytes(snapfile.encode(Snapshot(SnapshotMeta(3, 1), KVStore().snapshot()), "x"))
    occupied = raftd("restore", "--snapshot", str(good), *args)
    assert occupied.returncode == 2 and "already holds a member's data" in occupied.stderr
