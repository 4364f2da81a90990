"""Classic Raft bugs, re-introduced on purpose to prove the simulator catches them.

They live here, in the tests, as subclasses and storage wrappers: the product code carries
no switch that could turn a bug on by accident.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from raftd.core import (
    AppendEntriesResponse,
    Config,
    DurableState,
    HardState,
    RaftLog,
    RaftNode,
    ReadState,
    Ready,
)
from raftd.core.types import InstallSnapshot
from raftd.storage import MemoryStorage
from tests.sim.simulator import NodeFactory, SimStorage, StorageFactory, default_node


class OldTermCommitNode(RaftNode):
    """Commits by counting replicas of any entry, ignoring Figure 8's current-term rule."""

    def _maybe_commit(self) -> None:
        matches = sorted((pr.match_index for pr in self._progress.values()), reverse=True)
        candidate = matches[self.quorum - 1]
        if candidate > self.commit_index:
            self._commit_to(candidate)


class LearnersCountNode(RaftNode):
    """Counts learners' acknowledgements towards a commit, as if they were voters: an
    entry held by a learner and a minority of voters is committed, and a leader elected
    by the voters without it loses it."""

    def _maybe_commit(self) -> None:
        members = [*self.membership.voters, *self.membership.learners]
        if not members:
            return
        progress = [self._progress[n].match_index for n in members if n in self._progress]
        matches = sorted(progress, reverse=True)
        candidate = matches[len(members) // 2]
        if candidate > self.commit_index and self.log.term_at(candidate) == self.current_term:
            self._commit_to(candidate)


class _TrustingLog(RaftLog):
    def is_up_to_date(self, last_log_index: int, last_log_term: int) -> bool:
        return True


class NoLogCheckVoteNode(RaftNode):
    """Grants votes without checking that the candidate's log is at least as up-to-date."""

    def __init__(
        self, config: Config, rng: random.Random, durable: DurableState | None = None
    ) -> None:
        super().__init__(config, rng, durable)
        log = self.log
        self.log = _TrustingLog(
            log.slice(log.snapshot_index + 1, log.last_index + 1),
            log.snapshot_index,
            log.snapshot_term,
        )


class UnconfirmedReadNode(RaftNode):
    """Serves ReadIndex from its own commit index without a heartbeat round: a deposed
    leader that has not noticed yet answers from stale state."""

    def _release_confirmed_reads(self) -> None:
        while self._pending_reads:
            _, context, index = self._pending_reads.popleft()
            self._read_states.append(ReadState(context, index))


class SnapshotIgnoresTermNode(RaftNode):
    """Installs a snapshot as if any entry at its last index matched (Figure 13's step 6
    without the term check): a follower keeps a conflicting log under the leader's state."""

    def _handle_install_snapshot(self, msg: InstallSnapshot) -> None:
        meta = msg.snapshot.meta
        if self.commit_index < meta.index <= self.log.last_index:
            self._commit_to(meta.index)
            self._send(
                AppendEntriesResponse(
                    self.current_term, self.id, msg.src, True, match_index=meta.index
                )
            )
            return
        super()._handle_install_snapshot(msg)


class ForgetfulVoteStorage(MemoryStorage):
    """Persists the term but never voted_for: a restarted node may vote twice in a term."""

    def set_hard_state(self, hard_state: HardState) -> None:
        super().set_hard_state(HardState(hard_state.current_term, None))


class EarlySelfCountNode(RaftNode):
    """A leader counts its own copy of entries towards a commit as soon as it hands them
    to storage, before they are durable: a crash before the fsync loses a committed entry
    that a majority needed."""

    def advance(self, ready: Ready, *, persisted: bool = True) -> None:
        super().advance(ready, persisted=persisted)
        if not persisted:
            self._mark_stable(self.log.last_index)


@dataclass(frozen=True)
class Mutation:
    description: str
    node_factory: NodeFactory = default_node
    storage_factory: StorageFactory = MemoryStorage


def _node(cls: type[RaftNode]) -> NodeFactory:
    def make(config: Config, rng: random.Random, storage: SimStorage) -> RaftNode:
        return cls(config, rng, storage.load())

    return make


MUTATIONS: dict[str, Mutation] = {
    "old-term-commit": Mutation(
        "commit by counting replicas of old-term entries (Figure 8)", _node(OldTermCommitNode)
    ),
    "forget-vote": Mutation("voted_for is not persisted", storage_factory=ForgetfulVoteStorage),
    "unconfirmed-read": Mutation(
        "ReadIndex served without confirming leadership", _node(UnconfirmedReadNode)
    ),
    "no-log-check-vote": Mutation(
        "votes granted without the up-to-date log check",
        node_factory=_node(NoLogCheckVoteNode),
    ),
    "learners-count": Mutation(
        "learners' acknowledgements count towards a commit", node_factory=_node(LearnersCountNode)
    ),
    "early-self-count": Mutation(
        "a leader counts its own entries before its fsync finished",
        node_factory=_node(EarlySelfCountNode),
    ),
    "snapshot-ignores-term": Mutation(
        "a follower keeps its log under a snapshot whose last term it does not hold",
        node_factory=_node(SnapshotIgnoresTermNode),
    ),
}
