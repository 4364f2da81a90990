"""What each node's disk holds for certain, to check the rule behind every commit.

Raft commits an entry once a majority has it *on stable storage*. Losing a committed entry
takes more than a premature count: the node that counted too early must crash before its
fsync and then a majority without the entry must elect a leader, a chain random faults
seldom complete (a leader counting its own unsynced copy survived thousands of seeds).
So the simulator checks the rule itself, at the moment a leader's commit index moves: the
entry there must be synced, with the leader's term for it, on a majority of the voters.

Tracked from what the simulator staged and synced on each node's storage. A node that
restarts is taken to hold what it loaded: a crash that spared the page cache leaves entries
nobody synced, which the node (like any real one) then treats as its own durable log.
"""

from __future__ import annotations

from raftd.core import NodeId, RaftNode, Ready
from tests.sim.checker import Violation


class DurableLogs:
    def __init__(self) -> None:
        self._synced: dict[NodeId, dict[int, int]] = {}  # index -> term
        self._floor: dict[NodeId, int] = {}  # everything up to here is in a snapshot
        self._staged: dict[NodeId, list[tuple[int, list[tuple[int, int]]]]] = {}

    def started(self, node: RaftNode) -> None:
        log = node.log
        self._synced[node.id] = {
            i: term
            for i in range(log.first_index, log.last_index + 1)
            if (term := log.term_at(i)) is not None
        }
        self._floor[node.id] = log.snapshot_index
        self._staged[node.id] = []

    def staged(self, node_id: NodeId, ready: Ready) -> None:
        staged = self._staged[node_id]
        if ready.snapshot is not None:
            staged.append((ready.snapshot.meta.index, []))
        if ready.entries:
            staged.append((-1, [(e.index, e.term) for e in ready.entries]))

    def synced(self, node_id: NodeId) -> None:
        log, staged = self._synced[node_id], self._staged[node_id]
        for snapshot_index, entries in staged:
            if snapshot_index >= 0:
                log.clear()
                self._floor[node_id] = snapshot_index
                continue
            first = entries[0][0]
            for index in [i for i in log if i >= first]:
                del log[index]  # storage drops everything from a batch's first index on
            log.update(entries)
        staged.clear()

    def snapshot_saved(self, node_id: NodeId, index: int) -> None:
        self._floor[node_id] = max(self._floor[node_id], index)

    def check_commit(self, leader: RaftNode, index: int) -> None:
        term = leader.log.term_at(index)
        if term is None:
            return  # compacted away already: it was checked when it committed
        holders = [
            v
            for v in leader.membership.voters
            if v in self._synced and (self._synced[v].get(index) == term or self._floor[v] >= index)
        ]
        if len(holders) < leader.quorum:
            raise Violation(
                f"node {leader.id} committed index {index} (term {term}) while only "
                f"{holders} of voters {list(leader.membership.voters)} had it on disk"
            )
