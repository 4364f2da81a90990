"""Snapshots on real members: the log is compacted as it goes, and survives restarts.

Thresholds are set low (a snapshot every 50 entries, keeping 10, segments of 1 MiB, values
of 20 kB) so a few hundred writes make every member snapshot, compact and delete segments.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import trio

from tests.integration.harness import Cluster, metric, running
from tests.integration.test_cluster import Writer, get
from wire.api import StateHashRequest, StatusReply

FLAGS = ["--snapshot-entries", "50", "--snapshot-keep", "10", "--wal-segment-mb", "1"]
VALUE = "v" * 20_000


def compacting_cluster(tmp_path: Path) -> Cluster:
    """Three members with metrics and the low snapshot thresholds above."""
    cluster = Cluster(tmp_path, 3)
    cluster.serve_metrics()
    for member in cluster.members.values():
        member.extra_args += FLAGS
    return cluster


async def state_hashes(cluster: Cluster) -> dict[str, tuple[int, str | None]]:
    found = {}
    for name in cluster.members:
        reply = await cluster.request(name, StateHashRequest(), timeout_s=10)
        assert isinstance(reply, StatusReply)
        found[name] = (reply.last_applied, reply.state_hash)
    return found


async def converged(cluster: Cluster) -> dict[str, tuple[int, str | None]]:
    """Every member at the same applied index with the same state (a restarted member may
    not be listening yet: ask again)."""
    with trio.fail_after(30):
        while True:
            try:
                hashes = await state_hashes(cluster)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError):
                hashes = {}
            if hashes and len(set(hashes.values())) == 1:
                return hashes
            await trio.sleep(0.1)


async def test_members_compact_their_logs_and_restart_from_snapshots(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = compacting_cluster(tmp_path)
    async with running(cluster, nursery):
        writer = Writer(cluster)
        for n in range(300):
            await writer.set(f"k{n % 40}", f"{n}:{VALUE}", timeout_s=30)
        before = await converged(cluster)
        for name, member in cluster.members.items():
            text = await cluster.scrape(name)
            assert metric(text, "raftd_snapshot_index") >= 250, name
            # Entries held: the kept 10, plus what came since the last snapshot (< 50).
            assert metric(text, "raftd_log_entries") < 70, name
            assert metric(text, 'raftd_snapshots_total{kind="taken"}') >= 5, name
            files = sorted(p.name for p in member.data_dir.iterdir())
            assert len([f for f in files if f.endswith(".snap")]) == 2, files
            segments = [f for f in files if f.startswith("wal-")]
            # 6 MB of values went through 1 MiB segments; all but the newest few are gone.
            assert segments[0] != "wal-00000001.log" and len(segments) <= 3, segments
        for name in list(cluster.members):
            await cluster.stop(name)
        for name in cluster.members:
            await cluster.start_member(name)
        await cluster.wait_all_serving(timeout_s=30)
        after = await converged(cluster)
        # The same state (a new term's no-op moves only the applied index on).
        assert {h for _, h in after.values()} == {h for _, h in before.values()}
        leader = await cluster.wait_for_leader()
        for n in range(260, 300):
            reply = await get(cluster, leader, f"k{n % 40}")
            assert reply.value == f"{n}:{VALUE}"


async def test_a_follower_whose_disk_was_wiped_catches_up_from_the_leaders_snapshot(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = compacting_cluster(tmp_path)
    await cluster.start(nursery)
    try:
        leader = await cluster.wait_for_leader(timeout_s=30)
        writer = Writer(cluster)
        for n in range(200):
            await writer.set(f"k{n % 40}", f"{n}:{VALUE}", timeout_s=30)
        victim = next(name for name in cluster.members if name != leader)
        await cluster.stop(victim)
        shutil.rmtree(cluster.members[victim].data_dir)
        # No write comes after the restart: the leader must learn from the heartbeats
        # alone that the member lost what it had acknowledged.
        await cluster.start_member(victim)
        hashes = await converged(cluster)
        assert hashes[victim][0] >= 200
        text = await cluster.scrape(victim)
        assert metric(text, 'raftd_snapshots_total{kind="installed"}') >= 1
        assert metric(text, 'raftd_snapshots_total{kind="received"}') >= 1
        leader = await cluster.wait_for_leader()
        sent = metric(await cluster.scrape(leader), 'raftd_snapshots_total{kind="sent"}')
        assert sent >= 1
        assert "installed a snapshot from the leader" in cluster.log_text(victim)
    finally:
        await cluster.shutdown()


async def test_a_snapshot_transfer_cut_short_by_a_lost_connection_is_sent_again(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = compacting_cluster(tmp_path)
    async with running(cluster, nursery):
        writer = Writer(cluster)
        # 120 keys of 20 kB: a snapshot of about 2.4 MB, three chunks of 1 MiB.
        for n in range(240):
            await writer.set(f"k{n % 120}", f"{n}:{VALUE}", timeout_s=30)
        leader = await cluster.wait_for_leader()
        victim = next(name for name in cluster.members if name != leader)
        await cluster.stop(victim)
        shutil.rmtree(cluster.members[victim].data_dir)
        # The leader's connection to the victim breaks inside the snapshot's second chunk.
        cluster.links[(leader, victim)].cut_after(1_500_000)
        await cluster.start_member(victim)
        hashes = await converged(cluster)
        assert hashes[victim][0] >= 240
        receiver = await cluster.scrape(victim)
        assert metric(receiver, 'raftd_snapshot_transfers_cut_total{side="receiver"}') >= 1
        assert metric(receiver, 'raftd_snapshots_total{kind="installed"}') >= 1
        assert "snapshot transfer cut short" in cluster.log_text(victim)
        # The leader sent it twice. It knows the first was cut short only if a write of
        # it failed: the socket's buffers may have taken every chunk before the cut.
        sender = await cluster.scrape(leader)
        sent = metric(sender, 'raftd_snapshots_total{kind="sent"}')
        if "snapshot transfer cut short" in cluster.log_text(leader):
            assert metric(sender, 'raftd_snapshot_transfers_cut_total{side="sender"}') >= 1
            assert sent >= 1
        else:
            assert sent >= 2
