"""Log entries, durable state and messages: the vocabulary of the Raft paper.

Every message kind is its own frozen dataclass, so ``match`` can dispatch on it and a
field that only one kind needs never sits empty on the others. Responses are one-way
messages like any other: the core never waits for a reply, it reacts when one arrives.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

NodeId = int


class EntryKind(enum.IntEnum):
    """Why an entry is in the log: client commands, the leader's term-start no-op, or a
    new cluster configuration (``raftd.core.membership``)."""

    NORMAL = 0
    NOOP = 1
    CONFIG = 2


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is opaque to the core: the state machine gives it meaning.

    ``context`` is just as opaque: the runtime stores there the W3C traceparent of the
    request that proposed the entry (empty when that trace is not sampled), so that every
    member's append and apply of the entry join the request's trace, even when one
    AppendEntries carries entries of many traces.
    """

    index: int
    term: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL
    context: str = ""


@dataclass(frozen=True, slots=True)
class HardState:
    """What a node must have on stable storage before it answers anyone (Figure 2)."""

    current_term: int = 0
    voted_for: NodeId | None = None


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot stands: the last entry it includes, and the voters at that point.

    ``voters`` is the configuration the snapshot's state was reached under, and ``config``
    the data of the newest configuration entry it covers (b"": none, the cluster still has
    the configuration it was bootstrapped with), so that a member restored from a snapshot
    knows its cluster, learners and the runtime's names and addresses included, after the
    entries that said so were compacted away."""

    index: int
    term: int
    voters: tuple[NodeId, ...] = ()
    config: bytes = b""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine as of ``meta.index``: ``data`` is opaque to the core (the runtime
    encodes and restores it), like an entry's data."""

    meta: SnapshotMeta
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class DurableState:
    """Everything a node restarts from: its hard state and the log after the snapshot point.

    ``snapshot_index``/``snapshot_term`` describe the entry just before ``entries[0]``; they are
    (0, 0) until log compaction exists, and the log keeps this offset so compaction needs no
    rewrite of the indexing code.
    """

    hard_state: HardState = HardState()
    entries: tuple[Entry, ...] = ()
    snapshot_index: int = 0
    snapshot_term: int = 0
    # The newest snapshot, if any: the state machine restarts from it, and a leader sends
    # it to a follower that needs entries the log no longer holds. Its index is at or
    # after ``snapshot_index`` (a log may keep some entries the snapshot already covers).
    snapshot: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class RequestVote:
    """A (pre-)candidate asking for a vote. A pre-vote carries the term it *would* use.

    ``campaign`` numbers the sender's election rounds and is echoed in the response: every
    pre-vote round of one term asks for the same term, so without it a grant delayed from an
    earlier round would be counted in a later one, when the voter may since have found a
    leader and would refuse.
    """

    term: int
    src: NodeId
    dst: NodeId
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    campaign: int = 0
    # Sent by a candidate that a leader handed its leadership to (TimeoutNow): voters that
    # heard from that leader lately grant it anyway, as the leader itself asked for it.
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    term: int
    src: NodeId
    dst: NodeId
    vote_granted: bool
    pre_vote: bool = False
    campaign: int = 0


@dataclass(frozen=True, slots=True)
class AppendEntries:
    term: int
    src: NodeId
    dst: NodeId
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """A follower's answer.

    On success ``match_index`` is the last index known to match the leader (never the
    follower's whole log, which may hold unverified entries). On failure,
    ``rejected_index`` is the ``prev_log_index`` that did not match, and
    ``conflict_term``/``conflict_index`` let the leader skip a whole term at once
    (the fast back-off of section 5.3).
    """

    term: int
    src: NodeId
    dst: NodeId
    success: bool
    match_index: int = 0
    rejected_index: int = 0
    conflict_term: int = 0
    conflict_index: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader liveness plus a commit index the follower can safely adopt.

    Kept apart from AppendEntries (as etcd does) so a heartbeat never races in-flight
    pipelined appends on ``prev_log_index`` and never forces a follower back to probing.
    ``leader_commit`` is already capped at what the follower is known to hold.
    ``read_round`` is the leader's latest ReadIndex round: a follower echoing it proves the
    leader still led when that round began (section 6.4 of the Raft dissertation).
    ``commit_index`` is the leader's own, uncapped: a follower that has applied that far
    is as current as the leader was, which is what a bounded-staleness read needs to know
    (hearing from the leader alone does not mean being caught up with it).
    """

    term: int
    src: NodeId
    dst: NodeId
    leader_commit: int
    read_round: int = 0
    commit_index: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """A leader's snapshot for a follower whose next entry the leader no longer has
    (Figure 13). Whole here; the runtime's transport moves ``snapshot.data`` in chunks.
    The follower answers with an ``AppendEntriesResponse`` whose ``match_index`` is what
    it now holds, as etcd does, so the leader's progress tracking needs no second path."""

    term: int
    src: NodeId
    dst: NodeId
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    """``last_index`` is the follower's last log index: a leader that finds it below what it
    believed the follower held learns that the follower lost entries (its data directory
    was wiped or damaged) and probes it again, instead of waiting for the next write to
    fail an append."""

    term: int
    src: NodeId
    dst: NodeId
    read_round: int = 0
    last_index: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """A leader handing over its leadership (dissertation section 3.10): the follower, whose
    log the leader has just brought up to date, starts an election at once."""

    term: int
    src: NodeId
    dst: NodeId


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
)
