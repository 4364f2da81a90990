"""Raft's safety properties (Figure 3 of the paper), checked incrementally after every event.

Each check looks only at what just changed, so checking after every event stays cheap:
- election safety: at most one leader per term;
- log matching: entries with the same (index, term) hold the same command and follow the same
  previous term, which by induction makes the logs identical up to that index;
- leader completeness: a new leader's log holds every entry committed so far;
- state machine safety: every node applies the same entry at each index, in index order;
- monotonicity: current_term never decreases (across restarts), commit_index never decreases
  within a node's life and never passes its log;
- one vote per term per node, across restarts;
- clients: only proposed commands are applied, and none twice;
- membership: each committed configuration differs from the one committed before it by at
  most one voter, so any majority of the one overlaps any majority of the other (no two
  disjoint majorities can each elect a leader or commit).
"""

from __future__ import annotations

from dataclasses import dataclass

from raftd.core import Entry, EntryKind, Membership, NodeId, RaftNode, Role


class Violation(Exception):
    """A safety property does not hold. The message says which and where."""


@dataclass(frozen=True, slots=True)
class EntryRecord:
    data: bytes
    kind: EntryKind
    prev_term: int


class SafetyChecker:
    def __init__(self) -> None:
        self.leader_of_term: dict[int, NodeId] = {}
        self.entry_at: dict[tuple[int, int], EntryRecord] = {}
        self.committed_term: dict[int, int] = {}  # index -> term, as any node committed it
        self.highest_committed = 0
        self.applied_at: dict[int, tuple[int, bytes]] = {}
        self.vote_of: dict[tuple[NodeId, int], NodeId] = {}
        self.max_term: dict[NodeId, int] = {}
        self.commit_seen: dict[NodeId, int] = {}
        self.applied_count: dict[NodeId, int] = {}
        self.applied_commands: dict[NodeId, set[bytes]] = {}
        self.proposed: set[bytes] = set()

    def configuration_committed(
        self, index: int, previous: Membership, committed: Membership
    ) -> None:
        changed = set(previous.voters) ^ set(committed.voters)
        overlap = 2 * len(set(previous.voters) & set(committed.voters))
        if len(changed) > 1 or (
            overlap <= len(previous.voters) and overlap <= len(committed.voters) and changed
        ):
            raise Violation(
                f"configuration at {index}: voters {previous.voters} -> {committed.voters}; "
                "majorities of the two need not overlap"
            )

    def node_restarted(self, node_id: NodeId) -> None:
        """A restarted node rebuilds its state machine and relearns the commit index."""
        self.commit_seen[node_id] = 0
        self.applied_count[node_id] = 0
        self.applied_commands[node_id] = set()

    def appended(self, node: RaftNode, entries: tuple[Entry, ...]) -> None:
        for entry in entries:
            prev_term = node.log.term_at(entry.index - 1)
            assert prev_term is not None
            record = EntryRecord(entry.data, entry.kind, prev_term)
            known = self.entry_at.setdefault((entry.index, entry.term), record)
            if known != record:
                raise Violation(
                    f"log matching: n{node.id} holds ({entry.index}, term {entry.term}) as "
                    f"{record}, another node as {known}"
                )

    def vote_granted(self, voter: NodeId, term: int, candidate: NodeId) -> None:
        earlier = self.vote_of.setdefault((voter, term), candidate)
        if earlier != candidate:
            raise Violation(
                f"double vote: n{voter} voted for n{earlier} and n{candidate} in term {term}"
            )

    def became_leader(self, node: RaftNode) -> None:
        # Entries a snapshot replaced were checked entry by entry when it was taken or
        # restored; the log from its offset on must hold every committed entry.
        for index in range(max(1, node.log.snapshot_index), self.highest_committed + 1):
            term = self.committed_term.get(index)
            if term is None:
                continue
            have = node.log.term_at(index) if index <= node.log.last_index else None
            if have != term:
                raise Violation(
                    f"leader completeness: n{node.id}, leader of term {node.current_term}, "
                    f"lacks committed entry ({index}, term {term}); it has term {have}"
                )

    def applied(self, node_id: NodeId, entry: Entry) -> None:
        expected_index = self.applied_count.get(node_id, 0) + 1
        if entry.index != expected_index:
            raise Violation(f"n{node_id} applied index {entry.index}, expected {expected_index}")
        self.applied_count[node_id] = entry.index
        known = self.applied_at.setdefault(entry.index, (entry.term, entry.data))
        if known != (entry.term, entry.data):
            raise Violation(
                f"state machine safety: n{node_id} applied ({entry.index}, term {entry.term}, "
                f"{entry.data!r}), another node applied (term {known[0]}, {known[1]!r})"
            )
        if entry.kind is EntryKind.NORMAL:
            if entry.data not in self.proposed:
                raise Violation(f"n{node_id} applied {entry.data!r}, which no client proposed")
            seen = self.applied_commands.setdefault(node_id, set())
            if entry.data in seen:
                raise Violation(f"n{node_id} applied {entry.data!r} twice")
            seen.add(entry.data)

    def restored(self, node_id: NodeId, applied: list[Entry]) -> None:
        """A node's state machine was replaced by a snapshot holding ``applied``: it must be
        the very entries every other node applied at those indexes, and the node goes on
        from there (state machine safety across snapshots)."""
        for position, entry in enumerate(applied, start=1):
            if entry.index != position:
                raise Violation(f"n{node_id} restored a snapshot with a gap at {position}")
            known = self.applied_at.setdefault(entry.index, (entry.term, entry.data))
            if known != (entry.term, entry.data):
                raise Violation(
                    f"state machine safety: n{node_id} restored ({entry.index}, term "
                    f"{entry.term}) from a snapshot, another node applied term {known[0]}"
                )
        self.applied_count[node_id] = len(applied)
        self.applied_commands[node_id] = {e.data for e in applied if e.kind is EntryKind.NORMAL}

    def node_state(self, node: RaftNode) -> None:
        """Checks on one node's state after it handled an input."""
        term = node.current_term
        if term < self.max_term.get(node.id, 0):
            raise Violation(
                f"n{node.id} current_term went back from {self.max_term[node.id]} to {term}"
            )
        self.max_term[node.id] = term
        if node.role is Role.LEADER:
            holder = self.leader_of_term.setdefault(term, node.id)
            if holder != node.id:
                raise Violation(f"election safety: n{holder} and n{node.id} lead term {term}")
        commit = node.commit_index
        if commit < self.commit_seen.get(node.id, 0):
            raise Violation(
                f"n{node.id} commit_index went back from {self.commit_seen[node.id]} to {commit}"
            )
        if commit > node.log.last_index:
            raise Violation(f"n{node.id} commit_index {commit} beyond its log")
        # Committed entries a snapshot replaced were checked when it was restored.
        first = max(self.commit_seen.get(node.id, 0), node.log.snapshot_index) + 1
        for index in range(first, commit + 1):
            term_here = node.log.term_at(index)
            assert term_here is not None
            known = self.committed_term.setdefault(index, term_here)
            if known != term_here:
                raise Violation(
                    f"committed entries differ: n{node.id} committed ({index}, term "
                    f"{term_here}), another node committed term {known}"
                )
        self.highest_committed = max(self.highest_committed, commit)
        self.commit_seen[node.id] = commit
