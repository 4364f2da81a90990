"""A member whose disk fills up stops (fail-stop) and loses nothing it acknowledged.

The data directory is a real tmpfs of a few hundred KiB, so the ENOSPC comes from the
kernel, part-way through a batch, exactly as on a full disk. Mounting needs root (this
machine and CI run as root); elsewhere the test says why it cannot run, and the storage
unit tests still simulate ENOSPC at every byte boundary.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.integration.harness import Cluster
from wire.api import ErrorReply, GetReply, GetRequest, SetRequest, WriteReply

VALUE = "x" * 4000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_a_full_disk_stops_the_member_and_a_restart_keeps_every_acknowledged_write(
    tmp_path: Path, small_disk: Path
) -> None:
    cluster = Cluster(tmp_path / "members", 1)
    member = cluster.members["n1"]
    member.data_dir = small_disk / "n1"
    acknowledged: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        try:
            await cluster.wait_for_leader(timeout_s=30)
            with trio.fail_after(60):
                for i in range(1000):  # 256 KiB holds fewer than 64 of these
                    try:
                        reply = await cluster.request(
                            "n1", SetRequest(f"k{i}", f"{i}{VALUE}", "filler", i + 1)
                        )
                    except (OSError, trio.BrokenResourceError, AssertionError):
                        break  # the member went away mid-request: not acknowledged
                    if isinstance(reply, ErrorReply):
                        break
                    assert isinstance(reply, WriteReply) and reply.ok
                    acknowledged[f"k{i}"] = f"{i}{VALUE}"
                assert member.process is not None
                assert await member.process.wait() == 1  # fail-stop, not a hang or a crash
        finally:
            await cluster.shutdown()
        assert acknowledged, "the disk was full before the first write"
        log = cluster.log_text("n1")
        assert "No space left on device" in log and "Traceback" not in log
        assert log.count("storage failed: stopping this member") == 1

        subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
        await cluster.start_member("n1")
        try:
            await cluster.wait_for_leader(timeout_s=30)
            for key, value in acknowledged.items():
                reply = await cluster.request("n1", GetRequest(key))
                assert isinstance(reply, GetReply) and reply.value == value, key
            assert "torn" in cluster.log_text("n1") or "truncat" in cluster.log_text("n1")
        finally:
            await cluster.shutdown()
