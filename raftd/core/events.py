"""What happened inside the core, for logs, metrics, spans and tests.

Events never ask for an action: the runtime may ignore all of them and Raft stays correct.
They exist so that an election or a write can be told as a story, and so tests can assert
on *why* something happened rather than only on the resulting state.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftd.core.types import NodeId


@dataclass(frozen=True, slots=True)
class BecameFollower:
    term: int
    leader_id: NodeId | None


@dataclass(frozen=True, slots=True)
class ElectionStarted:
    """A (pre-)election began: ``term`` is the term being campaigned for."""

    term: int
    pre_vote: bool
    reason: str  # "timeout", "campaign" or "transfer"


@dataclass(frozen=True, slots=True)
class BecameCandidate:
    term: int


@dataclass(frozen=True, slots=True)
class BecameLeader:
    term: int
    votes: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True)
class SteppedDown:
    """A leader or candidate gave up its role without a new leader being known."""

    term: int
    reason: str  # "higher_term", "check_quorum", "lost_election", "leader_found", "removed"


@dataclass(frozen=True, slots=True)
class ElectionLost:
    """A majority refused: ``granted``/``refused`` list who answered which way."""

    term: int
    pre_vote: bool
    granted: tuple[NodeId, ...]
    refused: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True)
class ElectionTimedOut:
    """No majority either way before the timeout: a split vote or lost messages."""

    term: int
    pre_vote: bool
    granted: tuple[NodeId, ...]
    refused: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True)
class VoteReceived:
    term: int
    voter: NodeId
    granted: bool
    pre_vote: bool


@dataclass(frozen=True, slots=True)
class VoteGranted:
    term: int
    candidate: NodeId
    pre_vote: bool


@dataclass(frozen=True, slots=True)
class VoteRefused:
    term: int
    candidate: NodeId
    pre_vote: bool
    reason: str  # "already_voted", "log_behind", "leader_lease", "stale_term"


@dataclass(frozen=True, slots=True)
class CommitAdvanced:
    old_commit_index: int
    new_commit_index: int


@dataclass(frozen=True, slots=True)
class LogTruncated:
    """A follower dropped conflicting, uncommitted entries from ``from_index`` on."""

    from_index: int
    term: int


@dataclass(frozen=True, slots=True)
class AppendRejected:
    """This follower refused an AppendEntries whose ``prev_log_index`` did not match."""

    leader_id: NodeId
    prev_log_index: int
    conflict_term: int
    conflict_index: int


@dataclass(frozen=True, slots=True)
class FollowerBackedOff:
    """The leader learned that ``peer`` lacks entries and will resend from ``next_index``."""

    peer: NodeId
    next_index: int


@dataclass(frozen=True, slots=True)
class StaleMessageIgnored:
    """A message from an older term (or an out-of-date reply) arrived and changed nothing."""

    src: NodeId
    kind: str
    msg_term: int
    current_term: int


@dataclass(frozen=True, slots=True)
class MisroutedMessageIgnored:
    """A message from a node outside the configuration, or addressed to another node."""

    src: NodeId
    dst: NodeId
    kind: str


@dataclass(frozen=True, slots=True)
class CommittedEntryConflict:
    """A leader sent an entry that differs from one this node has committed.

    Raft's Leader Completeness property says this cannot happen with honest, durable members;
    it means a member lost acknowledged data or a bug. The append is refused and nothing is
    truncated, because dropping a committed entry would turn one fault into lost writes.
    """

    src: NodeId
    index: int
    local_term: int
    leader_term: int
    commit_index: int


@dataclass(frozen=True, slots=True)
class SnapshotSent:
    """A leader sent its snapshot to a follower that needs entries the log no longer has."""

    peer: NodeId
    index: int
    term: int


@dataclass(frozen=True, slots=True)
class SnapshotInstalled:
    """A follower replaced its log and state machine with the leader's snapshot."""

    src: NodeId
    index: int
    term: int


@dataclass(frozen=True, slots=True)
class LogCompacted:
    """Entries up to ``index`` were dropped; ``snapshot_index`` is the snapshot they are in."""

    index: int
    snapshot_index: int


@dataclass(frozen=True, slots=True)
class ReadsAborted:
    """Leadership was lost before these ReadIndex requests were confirmed: they were not
    served, and may be retried anywhere."""

    contexts: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class LeaderTransferStarted:
    """This leader stopped taking proposals and is bringing ``target`` up to date."""

    term: int
    target: NodeId


@dataclass(frozen=True, slots=True)
class TimeoutNowSent:
    """``target`` holds the whole log: it was told to start an election now."""

    term: int
    target: NodeId


@dataclass(frozen=True, slots=True)
class LeaderTransferAborted:
    """The transfer ended without this leader stepping down; proposals resume."""

    term: int
    target: NodeId
    reason: str  # "timeout", "superseded" or "target_removed"


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    """A new configuration is in force here: the entry at ``index`` was appended (or, after
    a truncation or an installed snapshot, the one before it is in force again)."""

    index: int
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]


Event = (
    BecameFollower
    | ElectionStarted
    | BecameCandidate
    | BecameLeader
    | SteppedDown
    | ElectionLost
    | ElectionTimedOut
    | VoteReceived
    | VoteGranted
    | VoteRefused
    | CommitAdvanced
    | LogTruncated
    | AppendRejected
    | FollowerBackedOff
    | StaleMessageIgnored
    | MisroutedMessageIgnored
    | CommittedEntryConflict
    | SnapshotSent
    | SnapshotInstalled
    | LogCompacted
    | ReadsAborted
    | LeaderTransferStarted
    | TimeoutNowSent
    | LeaderTransferAborted
    | MembershipChanged
)
