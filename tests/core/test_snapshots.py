"""Snapshots in the core: compaction, InstallSnapshot on both sides, restarts (Figure 13).

Each story drives a small in-memory cluster whose state machine is the list of applied
entries; a snapshot is that list, so "the same state" can be checked to the entry.
"""

from __future__ import annotations

import pytest

from raftd.core import AppendEntriesResponse, LogCompactedError, Ready, Role
from raftd.core.events import LogCompacted, SnapshotInstalled, SnapshotSent
from raftd.core.node import SNAPSHOT_RETRY_TIMEOUTS, ReplicationState
from raftd.core.types import InstallSnapshot, Snapshot, SnapshotMeta
from raftd.storage import MemoryStorage, stage_ready
from tests.core.network import Network


def write(net: Network, leader: int, count: int, prefix: str = "c") -> None:
    for n in range(count):
        net.propose(leader, f"{prefix}{n}".encode())


def test_compaction_drops_the_covered_entries_but_a_trailing_window() -> None:
    net = Network()
    leader = net.elect(1).id
    write(net, leader, 20)
    node = net.nodes[leader]
    snapshot = net.snapshot(leader, keep_entries=5)
    assert snapshot.meta.index == node.last_applied == 21  # 20 writes and the no-op
    assert node.log.snapshot_index == 16 and node.log.first_index == 17
    assert net.events_of(leader, LogCompacted) == [LogCompacted(16, 21)]
    with pytest.raises(LogCompactedError):
        node.log.entry(16)
    durable = net.storages[leader].load()
    assert durable.snapshot == snapshot and durable.snapshot_index == 16
    assert [e.index for e in durable.entries] == list(range(17, 22))


def test_a_follower_behind_the_compaction_point_is_sent_the_snapshot() -> None:
    net = Network()
    leader = net.elect(1).id
    net.crash(3)
    write(net, leader, 30)
    snapshot = net.snapshot(leader)
    net.restart(3)
    net.tick(5)
    assert net.events_of(leader, SnapshotSent) == [SnapshotSent(3, 31, snapshot.meta.term)]
    assert net.events_of(3, SnapshotInstalled) == [SnapshotInstalled(1, 31, 1)]
    write(net, leader, 2, prefix="after")
    net.tick(2)  # followers learn the last commit with the next heartbeat
    assert net.applied[3] == net.applied[leader]
    follower = net.nodes[3]
    assert follower.log.snapshot_index == 31 and follower.commit_index == 33
    assert net.nodes[leader].progress(3).state is ReplicationState.REPLICATE


def test_the_snapshot_is_durable_before_the_follower_says_it_has_it() -> None:
    net = Network()
    leader = net.elect(1).id
    net.crash(2)
    write(net, leader, 10)
    net.snapshot(leader)
    seen: list[bool] = []

    def observe(node_id: int, ready: Ready, storage: MemoryStorage) -> None:
        if node_id == 2 and ready.snapshot is not None:
            answers = [m for m in ready.messages if isinstance(m, AppendEntriesResponse)]
            assert answers and answers[0].match_index == 11
            seen.append(storage.load().snapshot is not None)

    net.ready_observers.append(observe)
    net.restart(2)
    net.tick(5)
    assert seen == [True]


def test_a_follower_holding_the_snapshots_last_entry_keeps_its_log() -> None:
    net = Network()
    leader = net.elect(1).id
    write(net, leader, 5)
    follower = net.nodes[2]
    before = list(net.applied[2])
    snapshot = Snapshot(SnapshotMeta(4, 1, net.ids), b"")
    follower.step(InstallSnapshot(1, leader, 2, snapshot))
    net.process(2)
    assert net.events_of(2, SnapshotInstalled) == []
    assert follower.log.snapshot_index == 0 and follower.log.last_index == 6
    assert net.applied[2] == before  # not replaced by the (empty) snapshot data


def test_a_stale_snapshot_is_answered_with_what_the_follower_already_has() -> None:
    net = Network()
    leader = net.elect(1).id
    write(net, leader, 5)
    follower = net.nodes[2]
    follower.step(InstallSnapshot(1, leader, 2, Snapshot(SnapshotMeta(3, 1, net.ids), b"")))
    ready = follower.ready()
    (answer,) = ready.messages
    assert isinstance(answer, AppendEntriesResponse)
    assert answer.success and answer.match_index == follower.commit_index >= 3
    assert ready.snapshot is None
    follower.advance(ready)


def test_a_snapshot_replaces_a_conflicting_uncommitted_suffix() -> None:
    net = Network()
    old_leader = net.elect(1).id
    write(net, old_leader, 3)
    net.isolate(old_leader)
    for n in range(3):  # appended by the isolated leader only: never committed
        net.nodes[old_leader].propose(f"lost{n}".encode())
    net.stabilize()
    new_leader = net.wait_for_leader(among=(2, 3))
    write(net, new_leader, 10, prefix="new")
    net.snapshot(new_leader)
    net.heal()
    net.tick(30)
    assert net.nodes[old_leader].role is Role.FOLLOWER
    assert net.applied[old_leader] == net.applied[new_leader]
    assert not [c for c in net.commands(old_leader) if c.startswith(b"lost")]


def test_a_member_restarts_from_its_snapshot_and_the_entries_after_it() -> None:
    net = Network()
    leader = net.elect(1).id
    write(net, leader, 12)
    snapshot = net.snapshot(2, keep_entries=3)
    write(net, leader, 3, prefix="later")
    net.tick(2)
    expected = list(net.applied[2])
    net.crash(2)
    net.restart(2)
    restarted = net.nodes[2]
    index = snapshot.meta.index
    assert restarted.commit_index == restarted.last_applied == index
    assert restarted.log.snapshot_index == index - 3
    assert net.applied[2] == expected[:index]  # restored from the snapshot alone
    net.tick(3)
    assert net.applied[2] == expected


def snapshot_in_flight(net: Network, leader: int) -> list[InstallSnapshot]:
    """Run until the leader has sent a snapshot, and take it off the wire."""
    net.run_until(lambda: bool(net.events_of(leader, SnapshotSent)))
    net.process(leader)
    taken = net.drop_in_flight()
    net.send(m for m in taken if not isinstance(m, InstallSnapshot))
    return [m for m in taken if isinstance(m, InstallSnapshot)]


def test_a_lost_snapshot_is_sent_again() -> None:
    net = Network()
    leader = net.elect(1).id
    net.crash(3)
    write(net, leader, 10)
    net.snapshot(leader)
    net.restart(3)
    assert len(snapshot_in_flight(net, leader)) == 1  # and lost
    assert net.nodes[leader].progress(3).state is ReplicationState.SNAPSHOT
    net.tick(SNAPSHOT_RETRY_TIMEOUTS * net.config(leader).election_timeout_ticks + 2)
    assert len(net.events_of(leader, SnapshotSent)) == 2
    net.tick(2)
    assert net.applied[3] == net.applied[leader]


def test_a_crash_mid_install_loses_the_unsynced_snapshot_and_the_leader_sends_it_again() -> None:
    net = Network()
    leader = net.elect(1).id
    net.crash(3)
    write(net, leader, 10)
    net.snapshot(leader)
    net.restart(3)
    (install,) = snapshot_in_flight(net, leader)
    follower = net.nodes[3]
    follower.step(install)
    ready = follower.ready()
    assert ready.snapshot is not None
    stage_ready(net.storages[3], ready)
    net.crash(3)  # staged, never synced: as if the power went out mid-install
    assert net.storages[3].load().snapshot is None
    net.restart(3)
    net.tick(SNAPSHOT_RETRY_TIMEOUTS * net.config(leader).election_timeout_ticks + 5)
    assert net.applied[3] == net.applied[leader]


def test_compact_refuses_a_snapshot_it_cannot_stand_behind() -> None:
    net = Network()
    leader = net.elect(1).id
    write(net, leader, 5)
    node = net.nodes[leader]
    with pytest.raises(ValueError, match="past the applied"):
        node.compact(Snapshot(SnapshotMeta(node.last_applied + 1, 1, net.ids)))
    with pytest.raises(ValueError, match="has term"):
        node.compact(Snapshot(SnapshotMeta(3, 7, net.ids)))
    net.snapshot(leader)
    with pytest.raises(ValueError, match="older"):
        node.compact(Snapshot(SnapshotMeta(2, 1, net.ids)))


@pytest.mark.parametrize("compacted", [False, True])
def test_a_follower_that_lost_its_disk_is_found_out_by_heartbeats_alone(compacted: bool) -> None:
    """No write follows the wipe, so no append can fail: the heartbeat answers must carry
    the follower's real last index for the leader to probe it (and send the snapshot)."""
    net = Network()
    leader = net.elect(1).id
    write(net, leader, 30)
    if compacted:
        net.snapshot(leader)
    assert net.nodes[leader].progress(3).match_index == 31
    net.crash(3)
    net.storages[3] = MemoryStorage()
    net.restart(3)
    net.tick(10)
    assert net.nodes[leader].role is Role.LEADER
    assert net.nodes[3].log.last_index == 31
    assert net.applied[3] == net.applied[leader]
    assert net.nodes[leader].progress(3).match_index == 31
    assert len(net.events_of(3, SnapshotInstalled)) == int(compacted)
