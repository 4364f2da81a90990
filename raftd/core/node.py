"""The Raft algorithm as a pure state machine.

Rules of this package (a test parses its imports to keep them):
- no sockets, no trio, no threads, no file access, no ``time``, no global ``random``,
  no logging, no metrics; the standard library only;
- randomness comes from the injected ``random.Random``; time advances only by ``tick()``.

Inputs are ``tick()``, ``step(message)``, ``propose(data)`` and ``campaign()``. The output is
one ``Ready`` bundle at a time (see ``Ready`` for the order its fields must be handled in),
acknowledged with ``advance(ready)``. No input may arrive between ``ready()`` and
``advance()``: the driver persists, sends and applies one bundle, then feeds the core again.
That keeps "persist before send" true by construction and makes group commit natural: all
input that queued up during an fsync becomes the next bundle.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass

from raftd.core.events import (
    AppendRejected,
    BecameCandidate,
    BecameFollower,
    BecameLeader,
    CommitAdvanced,
    CommittedEntryConflict,
    ElectionLost,
    ElectionStarted,
    ElectionTimedOut,
    Event,
    FollowerBackedOff,
    LeaderTransferAborted,
    LeaderTransferStarted,
    LogCompacted,
    LogTruncated,
    MembershipChanged,
    MisroutedMessageIgnored,
    ReadsAborted,
    SnapshotInstalled,
    SnapshotSent,
    StaleMessageIgnored,
    SteppedDown,
    TimeoutNowSent,
    VoteGranted,
    VoteReceived,
    VoteRefused,
)
from raftd.core.log import RaftLog
from raftd.core.membership import Membership, MembershipError
from raftd.core.types import (
    AppendEntries,
    AppendEntriesResponse,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NodeId,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)

# A snapshot unanswered for this many election timeouts is sent again: long enough for a
# big one to cross a slow link, short enough that a lost one does not strand a follower.
SNAPSHOT_RETRY_TIMEOUTS = 4

# How long a leader keeps telling a removed member about its removal, in election timeouts
# after the change commits: long enough for a slow member to catch up to the change.
DEPARTING_TIMEOUTS = 4

# etcd's rule for promoting a learner: its log must hold at least this share of the
# leader's, so the new voter does not at once leave the cluster short of a working majority.
PROMOTION_READY_SHARE = 0.9

# What one entry costs an AppendEntries beyond its data and context, for the byte bound:
# the codec's list header and its index, term and kind fields, rounded up.
ENTRY_OVERHEAD = 32


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class Config:
    """Static settings of one node. Times are in ticks; the runtime decides a tick's length."""

    node_id: NodeId
    # The configuration a new cluster starts with (a member joining an existing cluster
    # starts with none and learns it from the log or a snapshot); afterwards the log rules.
    voters: tuple[NodeId, ...]
    election_timeout_ticks: int = 10
    heartbeat_interval_ticks: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_append: int = 256
    # Bytes of entry data per AppendEntries (etcd's MaxSizePerMsg): with large values an
    # entry count alone let a catch-up batch outgrow the frame limit. One entry is always
    # sent, so the runtime must cap a single entry (the client port's value limit) below it.
    max_bytes_per_append: int = 1 << 20
    max_inflight_appends: int = 64
    # Committed entries handed out per Ready (etcd's MaxCommittedSizePerReady, by count): a
    # restarted member learning that its whole replayed log is committed applied all of it
    # in one driver turn, seconds without a tick or a heartbeat at 100k entries.
    max_committed_per_ready: int = 1024

    def __post_init__(self) -> None:
        if len(set(self.voters)) != len(self.voters):
            raise ValueError(f"duplicate voters in {self.voters}")
        if self.heartbeat_interval_ticks < 1:
            raise ValueError("heartbeat_interval_ticks must be at least 1")
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks:
            raise ValueError("election_timeout_ticks must exceed heartbeat_interval_ticks")
        if min(self.max_entries_per_append, self.max_inflight_appends) < 1:
            raise ValueError("max_entries_per_append and max_inflight_appends must be >= 1")
        if min(self.max_bytes_per_append, self.max_committed_per_ready) < 1:
            raise ValueError("max_bytes_per_append and max_committed_per_ready must be >= 1")


@dataclass(frozen=True, slots=True)
class Ready:
    """One bundle of work for the runtime. Handle the fields in this order:

    1. ``hard_state`` (None when unchanged), ``snapshot`` and ``entries`` must be durable
       before any message of this bundle is sent, unless ``send_before_persist`` says
       otherwise. A ``snapshot`` came from the leader and replaces the whole stored log
       (store it first, then the entries, which follow it). ``entries[0].index`` may be at
       or below entries already stored: storage must drop everything from that index on,
       then append.
    2. ``messages``: send them; losing some is fine, Raft retransmits.
    3. ``snapshot``, if any: restore the state machine from it, before ``committed``.
       ``committed``: apply to the state machine, in index order. These entries are
       already durable on a majority, so they may be applied (and their clients answered)
       before or while this bundle's own ``entries`` are persisted.
       At most ``max_committed_per_ready`` of them: the rest come in the next Readies, so
       a runtime taking one Ready at a time keeps ticking while it applies a backlog.
    4. ``read_states``: ReadIndex requests now safe to serve once ``index`` is applied.
    5. ``events``: what happened, for logs, metrics, spans and tests; no action needed.

    ``send_before_persist`` is True when no message depends on this bundle's writes: a
    leader whose term and vote are already on disk. Its messages carry log entries and a
    commit index, and the leader counts its own copy of new entries towards a majority only
    at ``advance``, after they are durable; so it may send first and persist while the
    messages travel (Raft thesis, section 10.2.1), which takes its fsync out of the
    latency of every write. Such a bundle may even be advanced before its fsync ends
    (``advance(ready, persisted=False)``, then ``persisted``), so the leader goes on while
    its disk works.
    """

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    committed: tuple[Entry, ...]
    events: tuple[Event, ...]
    read_states: tuple[ReadState, ...] = ()
    send_before_persist: bool = False
    snapshot: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be answered from state that has applied ``index``."""

    context: bytes
    index: int


class NotLeaderError(Exception):
    """A proposal reached a node that is not the leader; ``leader_id`` is its best guess."""

    def __init__(self, leader_id: NodeId | None) -> None:
        super().__init__(f"not the leader (leader: {leader_id})")
        self.leader_id = leader_id


class LeaderTransferring(Exception):
    """A proposal reached a leader that is handing its leadership to ``target``: retry
    shortly (at the new leader, or here if the transfer is aborted)."""

    def __init__(self, target: NodeId) -> None:
        super().__init__(f"leadership is being transferred to {target}")
        self.target = target


class ReplicationState(enum.Enum):
    PROBE = "probe"  # one AppendEntries at a time until the follower's log position is known
    REPLICATE = "replicate"  # pipelined: send ahead without waiting, bounded by inflight
    SNAPSHOT = "snapshot"  # the follower needs the snapshot: sent, waiting for its answer


class Progress:
    """The leader's view of one follower (``next_index``/``match_index`` of Figure 2)."""

    __slots__ = (
        "inflight",
        "match_index",
        "next_index",
        "pending_snapshot",
        "probe_sent",
        "read_round_acked",
        "recent_active",
        "snapshot_elapsed",
        "state",
    )

    def __init__(self, next_index: int) -> None:
        self.match_index = 0
        self.next_index = next_index
        self.state = ReplicationState.PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()  # last index carried by each unacknowledged append
        self.recent_active = False
        self.read_round_acked = 0
        self.pending_snapshot = 0  # the index of the snapshot sent, in SNAPSHOT state
        self.snapshot_elapsed = 0  # ticks since it was sent

    def become_snapshot(self, index: int) -> None:
        self.state = ReplicationState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_elapsed = 0
        self.probe_sent = False
        self.inflight.clear()

    def become_probe(self, next_index: int) -> None:
        self.state = ReplicationState.PROBE
        self.next_index = next_index
        self.probe_sent = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ReplicationState.REPLICATE
        self.next_index = self.match_index + 1
        self.probe_sent = False
        self.inflight.clear()

    def acknowledge(self, match_index: int) -> None:
        while self.inflight and self.inflight[0] <= match_index:
            self.inflight.popleft()


class RaftNode:
    """One Raft server's consensus state. See the module docstring for the contract."""

    def __init__(
        self, config: Config, rng: random.Random, durable: DurableState | None = None
    ) -> None:
        durable = durable or DurableState()
        self.config = config
        self.id = config.node_id
        self._rng = rng

        self.current_term = durable.hard_state.current_term
        self.voted_for = durable.hard_state.voted_for
        self.log = RaftLog(durable.entries, durable.snapshot_index, durable.snapshot_term)
        # The newest snapshot: what the state machine restarts from, and what a follower
        # too far behind is sent. Its index may be past the log's offset (a trailing window
        # of entries is kept for slightly slow followers).
        self.snapshot = durable.snapshot
        restored = 0
        if durable.snapshot is not None:
            meta = durable.snapshot.meta
            restored = meta.index
            if restored < self.log.snapshot_index:
                raise ValueError(
                    f"the snapshot at {restored} is older than the log's start "
                    f"({self.log.snapshot_index}): the entries between are lost"
                )
            if restored > self.log.last_index or self.log.term_at(restored) != meta.term:
                # A snapshot may cover committed entries this member had applied but not yet
                # made durable itself, or the log may still hold a suffix the install it came
                # with was to replace: either way the log restarts after the snapshot.
                self.log.reset(meta.index, meta.term)
        self.commit_index = max(self.log.snapshot_index, restored)
        self.last_applied = self.commit_index
        self.role = Role.FOLLOWER
        self.leader_id: NodeId | None = None
        # Membership: the configuration in force at the log's start (the snapshot's, or the
        # bootstrap one), and every configuration entry in the log after it, newest last.
        self._base_membership = (
            membership_of(durable.snapshot.meta)
            if durable.snapshot is not None
            else Membership(tuple(sorted(config.voters)))
        )
        self._config_entries: list[tuple[int, Membership]] = [
            (e.index, Membership.decode(e.data))
            for e in durable.entries
            # Only entries still in the log: a snapshot past the log's end replaced it all.
            if e.kind is EntryKind.CONFIG
            and self.log.snapshot_index < e.index <= self.log.last_index
        ]
        self.membership = self._base_membership
        self._voters: frozenset[NodeId] = frozenset()
        self._peers: tuple[NodeId, ...] = ()
        # A leader's members that a change removed -> (the change's index, ticks since it
        # committed): still replicated to and sent heartbeats for DEPARTING_TIMEOUTS after
        # the change commits, so they learn it committed and stop (nothing else tells them).
        self._departing: dict[NodeId, list[int]] = {}
        self._quorum = 1
        self.transferee: NodeId | None = None

        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_election_timeout = 0
        self._reset_election_timer()
        self._votes: dict[NodeId, bool] = {}
        # Numbers this node's election rounds so a reply is counted only in the round that
        # asked (see RequestVote.campaign). Not durable: after a restart a reply delayed
        # from before it could match, which pre-vote tolerates (it only guards liveness).
        self._campaign = 0
        # Leadership transfer (dissertation 3.10): the leader's target (above) and the ticks
        # since it began; on the target, whether its current campaign was asked for.
        self._transfer_elapsed = 0
        self._transfer_campaign = False
        self._progress: dict[NodeId, Progress] = {}
        self._append_pending = False
        # ReadIndex: requests waiting for an entry of this term to commit, requests not yet
        # covered by a heartbeat round, and (round, context, index) awaiting a quorum.
        self._reads_awaiting_commit: list[bytes] = []
        self._reads_unsent: list[bytes] = []
        self._pending_reads: deque[tuple[int, bytes, int]] = deque()
        self._read_round = 0
        self._read_states: list[ReadState] = []

        self._persisted_hard_state = durable.hard_state
        self._stable_last_index = self.log.last_index
        self._unstable_from = self.log.last_index + 1
        # Entries handed to storage by ``advance(persisted=False)`` not yet known durable.
        self._unsynced = False
        self._messages: list[Message] = []
        self._events: list[Event] = []
        self._pending_ready: Ready | None = None
        self._snapshot_to_install: Snapshot | None = None
        self._use_membership(announce=False)

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        """One unit of logical time has passed."""
        self._require_no_pending_ready()
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now, as if the election timer had fired (tests, operators)."""
        self._require_no_pending_ready()
        if self.role is not Role.LEADER and self._may_campaign():
            self._start_election("campaign")

    def propose(self, data: bytes, context: str = "") -> tuple[int, int]:
        """Append a client command; returns its (index, term).

        The command is committed only if the entry at that index is later applied with the
        same term; if another term shows up there, the proposal was lost with the leadership.
        ``context`` travels with the entry, untouched (see ``Entry``).
        """
        self._require_no_pending_ready()
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.transferee is not None:
            # New entries would keep the target behind and the transfer from finishing.
            raise LeaderTransferring(self.transferee)
        entry = Entry(self.log.last_index + 1, self.current_term, data, EntryKind.NORMAL, context)
        self.log.append(entry)
        self._append_pending = True
        return entry.index, entry.term

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand the leadership to ``target`` (dissertation section 3.10): stop taking
        proposals, bring its log up to date, then send it ``TimeoutNow`` so it campaigns at
        once. Ends when this leader steps down, or after an election timeout (the event
        ``LeaderTransferAborted``), when proposals resume. Transferring to itself is a
        no-op; a new target replaces the one in progress."""
        self._require_no_pending_ready()
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if target == self.id:
            return
        if target not in self._voters:
            raise ValueError(f"{target} is not a voting member")
        if self.transferee == target:
            return
        if self.transferee is not None:
            self._abort_transfer("superseded")
        self.transferee = target
        self._transfer_elapsed = 0
        self._events.append(LeaderTransferStarted(self.current_term, target))
        if self._progress[target].match_index == self.log.last_index:
            self._send_timeout_now(target)
        else:
            self._send_append(target)

    def propose_membership(self, membership: Membership, context: str = "") -> tuple[int, int]:
        """Append a new configuration (one voter added or removed, learners as wished);
        it is in force here at once. Refused (``MembershipError``, saying why) while the
        previous change has not committed, before this leader has committed an entry of its
        own term, for more than one voter changed, or for a learner promoted before its log
        holds ``PROMOTION_READY_SHARE`` of the leader's. Returns the entry's (index, term)."""
        self._require_no_pending_ready()
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.transferee is not None:
            raise LeaderTransferring(self.transferee)
        if self._config_entries and self._config_entries[-1][0] > self.commit_index:
            raise MembershipError(
                f"the previous membership change (index {self._config_entries[-1][0]}) has "
                "not committed yet; retry once it has"
            )
        if self.log.term_at(self.commit_index) != self.current_term:
            raise MembershipError(
                "this leader has not yet committed an entry of its own term; retry shortly"
            )
        if not membership.data:
            membership = Membership.of(membership.voters, membership.learners)
        membership.check_step_from(self.membership)
        for voter in set(membership.voters) - set(self.membership.voters):
            if voter in self.membership.learners:
                match = self._progress[voter].match_index
                if match < PROMOTION_READY_SHARE * self.log.last_index:
                    raise MembershipError(
                        f"learner {voter} holds {match} of {self.log.last_index} entries: "
                        "promote it once it has caught up"
                    )
        entry = Entry(
            self.log.last_index + 1, self.current_term, membership.data, EntryKind.CONFIG, context
        )
        self.log.append(entry)
        self._append_pending = True
        self._config_entries.append((entry.index, membership))
        self._use_membership()
        return entry.index, entry.term

    @property
    def membership_committed(self) -> bool:
        """Whether the configuration in force is committed (no change pending)."""
        return self._membership_committed()

    def membership_at(self, index: int) -> Membership:
        """The configuration in force once the log up to ``index`` is applied: what a
        snapshot taken at ``index`` must carry (``SnapshotMeta.config``)."""
        found = self._base_membership
        for at, membership in self._config_entries:
            if at <= index:
                found = membership
        return found

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read (dissertation section 6.4).

        The answer arrives as a ``ReadState(context, index)`` in a later Ready: once the
        state machine has applied ``index``, reading it is linearizable. Reads wait for an
        entry of the leader's term to commit (only then is its commit index the cluster's),
        and one heartbeat round to a quorum confirms that no newer leader exists. Every
        read queued before the next ``ready()`` shares that round.
        """
        self._require_no_pending_ready()
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.log.term_at(self.commit_index) == self.current_term:
            self._reads_unsent.append(context)
        else:
            self._reads_awaiting_commit.append(context)

    def compact(self, snapshot: Snapshot, keep_entries: int = 0) -> int:
        """The state machine was saved as of ``snapshot.meta.index``: keep that snapshot to
        send to followers too far behind, and drop the log entries it covers, except the
        last ``keep_entries`` of them (for followers only slightly behind, which catch up
        faster from entries than from a whole snapshot). Returns the index the log was
        compacted to, for storage to drop the same entries.

        The runtime must have made the snapshot durable first: after this, the entries it
        covers may be gone from storage too."""
        self._require_no_pending_ready()
        meta = snapshot.meta
        if meta.index > self.last_applied:
            raise ValueError(f"snapshot at {meta.index} is past the applied {self.last_applied}")
        if self.snapshot is not None and meta.index < self.snapshot.meta.index:
            raise ValueError(
                f"snapshot at {meta.index} is older than the one at {self.snapshot.meta.index}"
            )
        if meta.index > self.log.snapshot_index and self.log.term_at(meta.index) != meta.term:
            raise ValueError(f"snapshot at {meta.index} has term {meta.term}, the log another")
        expected = self.membership_at(meta.index)
        carried = membership_of(meta)
        if (carried.voters, carried.learners) != (expected.voters, expected.learners):
            raise ValueError(
                f"snapshot at {meta.index} carries voters {carried.voters} and learners "
                f"{carried.learners}; the log says {expected.voters} and {expected.learners}"
            )
        self.snapshot = snapshot
        # Never past what this member has made durable itself: storage can only drop what it
        # holds, and entries still to be written must be written (a snapshot may run ahead
        # of the log when entries were applied before their own fsync).
        upto = min(meta.index - max(0, keep_entries), self._stable_last_index)
        if upto > self.log.snapshot_index:
            self._base_membership = self.membership_at(upto)
            self._config_entries = [(i, m) for i, m in self._config_entries if i > upto]
            self.log.compact(upto)
            self._events.append(LogCompacted(upto, meta.index))
        return self.log.snapshot_index

    def step(self, msg: Message) -> None:
        """Feed one message from a peer. Stale or unexpected messages are ordinary input."""
        self._require_no_pending_ready()
        # Any member may write: one this member does not know yet (a configuration it has
        # not received) included. Who counts in a majority is decided where votes and
        # acknowledgements are counted.
        if msg.dst != self.id or msg.src == self.id:
            self._events.append(MisroutedMessageIgnored(msg.src, msg.dst, type(msg).__name__))
            return
        if msg.term > self.current_term:
            if isinstance(msg, RequestVote):
                if self._in_leader_lease() and not msg.transfer:
                    # Section 9.6 / 4.2.3: we heard from a live leader recently, so this
                    # candidate is disruptive; ignoring it keeps the cluster's term stable.
                    self._events.append(
                        VoteRefused(msg.term, msg.src, msg.pre_vote, "leader_lease")
                    )
                    return
                if not msg.pre_vote:
                    self._become_follower(msg.term, None, "higher_term")
            elif isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.vote_granted:
                pass  # a granted pre-vote echoes the term we would campaign for
            else:
                from_leader = isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot)
                leader = msg.src if from_leader else None
                self._become_follower(msg.term, leader, "higher_term")
        elif msg.term < self.current_term:
            self._step_stale(msg)
            return

        if self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role is Role.FOLLOWER:
            self._step_follower(msg)
        else:
            self._step_candidate(msg)

    # ----------------------------------------------------------------- outputs

    def has_ready(self) -> bool:
        return bool(
            self._messages
            or self._events
            or self._reads_unsent
            or self._read_states
            or self._append_pending
            or self._snapshot_to_install is not None
            or self._unstable_from <= self.log.last_index
            or self.commit_index > self.last_applied
            or self._hard_state() != self._persisted_hard_state
        )

    def ready(self) -> Ready:
        """Take the next bundle of work. Call ``advance`` with it once it is handled."""
        self._require_no_pending_ready()
        if self._append_pending:
            self._append_pending = False
            if self.role is Role.LEADER:
                self._broadcast_append()
        if self._reads_unsent:
            self._start_read_round()
        hard_state = self._hard_state()
        last = self.log.last_index
        apply_to = min(
            self.commit_index, last, self.last_applied + self.config.max_committed_per_ready
        )
        ready = Ready(
            hard_state=hard_state if hard_state != self._persisted_hard_state else None,
            entries=self.log.slice(self._unstable_from, last + 1)
            if self._unstable_from <= last
            else (),
            messages=tuple(self._messages),
            committed=self.log.slice(self.last_applied + 1, apply_to + 1)
            if apply_to > self.last_applied
            else (),
            events=tuple(self._events),
            read_states=tuple(self._read_states),
            send_before_persist=(
                self.role is Role.LEADER and hard_state == self._persisted_hard_state
            ),
            snapshot=self._snapshot_to_install,
        )
        self._snapshot_to_install = None
        self._messages.clear()
        self._events.clear()
        self._read_states.clear()
        self._pending_ready = ready
        return ready

    def advance(self, ready: Ready, *, persisted: bool = True) -> None:
        """The runtime persisted, sent and applied ``ready``.

        ``persisted=False``: the runtime only staged this bundle's entries and will say when
        they are durable through ``persisted`` (allowed when ``send_before_persist``: a
        leader, whose own copy counts towards a majority only once durable, need not stop
        for its fsync; it goes on proposing and replicating while the disk works, and its
        followers' copies may commit the entries first). With ``persisted=True`` the
        runtime says that everything it was ever handed is durable (one fsync covers all
        that was staged before it)."""
        if ready is not self._pending_ready:
            raise RuntimeError("advance() must be given the Ready returned by ready()")
        if not persisted and not ready.send_before_persist:
            raise RuntimeError("only a Ready that may be sent first may be persisted later")
        self._pending_ready = None
        if ready.hard_state is not None:
            self._persisted_hard_state = ready.hard_state
        self._unstable_from = self.log.last_index + 1
        if ready.committed:
            self.last_applied = ready.committed[-1].index
        if not persisted:
            self._unsynced = self._unsynced or bool(ready.entries)
        elif not self._unsynced or ready.entries or ready.hard_state or ready.snapshot:
            # A bundle with nothing to write vouches for nothing still being written.
            self._unsynced = False
            self._mark_stable(self.log.last_index)

    def persisted(self, index: int, term: int) -> None:
        """Entries up to ``index``, the last of them of ``term``, staged by Readies advanced
        with ``persisted=False``, are now durable.

        The log may have changed since they were staged (a leader that stepped down and took
        a new leader's entries over them): by the Log Matching Property, an entry of
        ``term`` still at ``index`` means the whole prefix is the one that was written;
        otherwise the report says nothing about today's log and is dropped."""
        self._require_no_pending_ready()
        if index <= self._stable_last_index or self.log.term_at(index) != term:
            return
        if index >= self.log.last_index:
            self._unsynced = False
        self._mark_stable(index)

    def _mark_stable(self, index: int) -> None:
        self._stable_last_index = max(self._stable_last_index, min(index, self.log.last_index))
        if self.role is Role.LEADER:
            # The leader counts its own copy only once it is durable.
            me = self._progress[self.id]
            me.match_index = max(me.match_index, self._stable_last_index)
            self._maybe_commit()

    # -------------------------------------------------------------- inspection

    @property
    def quorum(self) -> int:
        return self._quorum

    def progress(self, peer: NodeId) -> Progress:
        """The leader's replication progress for ``peer`` (leader only; for tests/metrics)."""
        return self._progress[peer]

    # ------------------------------------------------------------------- timers

    def _reset_election_timer(self) -> None:
        self._election_elapsed = 0
        timeout = self.config.election_timeout_ticks
        self._randomized_election_timeout = self._rng.randrange(timeout, 2 * timeout)

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._election_elapsed < self._randomized_election_timeout:
            return
        if not self._may_campaign():
            # A learner, a member joining, or one removed: it never campaigns.
            self._reset_election_timer()
            return
        if self.role in (Role.PRE_CANDIDATE, Role.CANDIDATE):
            pre_vote = self.role is Role.PRE_CANDIDATE
            granted, refused = self._tally()
            term = self.current_term + 1 if pre_vote else self.current_term
            self._events.append(ElectionTimedOut(term, pre_vote, granted, refused))
        self._start_election("timeout")

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self.transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.config.election_timeout_ticks:
                self._abort_transfer("timeout")
        if self._election_elapsed >= self.config.election_timeout_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum:
                active = sum(1 for v in self._voters if self._progress[v].recent_active)
                if active < self._quorum:
                    self._become_follower(self.current_term, None, "check_quorum")
                    return
                for peer in self._peers:
                    self._progress[peer].recent_active = False
        self._tick_departing()
        for peer in self._replicas():
            pr = self._progress[peer]
            if pr.state is ReplicationState.SNAPSHOT:
                pr.snapshot_elapsed += 1
                if (
                    pr.snapshot_elapsed
                    >= SNAPSHOT_RETRY_TIMEOUTS * self.config.election_timeout_ticks
                ):
                    # Lost on the way, or the follower restarted mid-install: send again.
                    pr.become_probe(pr.match_index + 1)
                    self._send_append(peer)
        if self._heartbeat_elapsed >= self.config.heartbeat_interval_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _broadcast_heartbeat(self) -> None:
        for peer in self._replicas():
            commit = min(self._progress[peer].match_index, self.commit_index)
            self._send(
                Heartbeat(
                    self.current_term, self.id, peer, commit, self._read_round, self.commit_index
                )
            )

    def _start_read_round(self) -> None:
        self._read_round += 1
        for context in self._reads_unsent:
            self._pending_reads.append((self._read_round, context, self.commit_index))
        self._reads_unsent.clear()
        self._broadcast_heartbeat()
        self._release_confirmed_reads()

    def _release_confirmed_reads(self) -> None:
        while self._pending_reads:
            read_round, context, index = self._pending_reads[0]
            acks = sum(1 for v in self._voters if self._progress[v].read_round_acked >= read_round)
            if acks < self._quorum:
                return
            self._pending_reads.popleft()
            self._read_states.append(ReadState(context, index))

    def _abort_reads(self) -> None:
        contexts = (
            *self._reads_awaiting_commit,
            *self._reads_unsent,
            *(context for _, context, _ in self._pending_reads),
        )
        self._reads_awaiting_commit.clear()
        self._reads_unsent.clear()
        self._pending_reads.clear()
        if contexts:
            self._events.append(ReadsAborted(contexts))

    def _in_leader_lease(self) -> bool:
        """Heard from a live leader recently enough to refuse votes (thesis 4.2.3).

        The lease is a heartbeat interval shorter than the election timeout: members'
        ticks are not in phase, so when the first follower's (randomized, at least
        election-timeout) timer fires after the leader died, another follower may be a
        tick short of the full timeout. Refusing that pre-vote made the cluster wait a
        whole second timeout. Refusing votes only ever protects liveness, so a shorter
        lease costs no safety.

        A leader is always inside its own lease, as in etcd: its ``_election_elapsed``
        restarts at every check-quorum round, and one that has lost its quorum steps down at
        the next round rather than helping a disruptive candidate raise the term."""
        if self.role is Role.LEADER:
            return self.config.check_quorum
        return (
            self.config.check_quorum
            and self.leader_id is not None
            and self._election_elapsed
            < self.config.election_timeout_ticks - self.config.heartbeat_interval_ticks
        )

    # --------------------------------------------------------------- elections

    def _start_election(self, reason: str) -> None:
        if self.config.pre_vote:
            self._become_pre_candidate(reason)
        else:
            self._events.append(ElectionStarted(self.current_term + 1, False, reason))
            self._transfer_campaign = False
            self._become_candidate()

    def _become_pre_candidate(self, reason: str) -> None:
        self._transfer_campaign = False
        self.role = Role.PRE_CANDIDATE
        self.leader_id = None
        self._votes = {self.id: True}
        self._campaign += 1
        self._reset_election_timer()
        term = self.current_term + 1
        self._events.append(ElectionStarted(term, True, reason))
        self._request_votes(term, pre_vote=True)
        self._check_election_result()

    def _become_candidate(self) -> None:
        self.current_term += 1
        self.voted_for = self.id
        self.role = Role.CANDIDATE
        self.leader_id = None
        self._votes = {self.id: True}
        self._campaign += 1
        self._reset_election_timer()
        self._events.append(BecameCandidate(self.current_term))
        self._request_votes(self.current_term, pre_vote=False)
        self._check_election_result()

    def _request_votes(self, term: int, *, pre_vote: bool) -> None:
        last_index, last_term = self.log.last_index, self.log.last_term
        transfer = self._transfer_campaign and not pre_vote
        for peer in self._peers:
            if peer not in self._voters:
                continue
            self._send(
                RequestVote(
                    term, self.id, peer, last_index, last_term, pre_vote, self._campaign, transfer
                )
            )

    def _campaign_on_request(self, msg: TimeoutNow) -> None:
        """The leader handed over: campaign now, skipping pre-vote (the leader asked, and
        the voters' leader lease must not stop it; see ``RequestVote.transfer``)."""
        self._events.append(ElectionStarted(self.current_term + 1, False, "transfer"))
        self._transfer_campaign = True
        self._become_candidate()

    def _send_timeout_now(self, target: NodeId) -> None:
        self._send(TimeoutNow(self.current_term, self.id, target))
        self._events.append(TimeoutNowSent(self.current_term, target))

    def _abort_transfer(self, reason: str) -> None:
        assert self.transferee is not None
        self._events.append(LeaderTransferAborted(self.current_term, self.transferee, reason))
        self.transferee = None

    def _tally(self) -> tuple[tuple[NodeId, ...], tuple[NodeId, ...]]:
        votes = [(n, ok) for n, ok in self._votes.items() if n in self._voters]
        granted = tuple(sorted(n for n, ok in votes if ok))
        refused = tuple(sorted(n for n, ok in votes if not ok))
        return granted, refused

    def _check_election_result(self) -> None:
        granted, refused = self._tally()
        if len(granted) >= self._quorum:
            if self.role is Role.PRE_CANDIDATE:
                self._become_candidate()
            else:
                self._become_leader(granted)
        elif len(refused) >= self._quorum:
            pre_vote = self.role is Role.PRE_CANDIDATE
            term = self.current_term + 1 if pre_vote else self.current_term
            self._events.append(ElectionLost(term, pre_vote, granted, refused))
            self._become_follower(self.current_term, None, "lost_election")

    def _become_leader(self, votes: tuple[NodeId, ...]) -> None:
        self._transfer_campaign = False
        self.transferee = None
        self.role = Role.LEADER
        self.leader_id = self.id
        self._votes = {}
        self._heartbeat_elapsed = 0
        self._election_elapsed = 0
        next_index = self.log.last_index + 1
        self._progress = {n: Progress(next_index) for n in (*self._peers, self.id)}
        if self._config_entries:
            # Members the newest change removed may not have heard that it committed (the
            # leader that made it is gone): tell them too, as that leader would have.
            index, newest = self._config_entries[-1]
            before = (
                self._config_entries[-2][1]
                if len(self._config_entries) > 1
                else self._base_membership
            )
            for gone in set(before.members) - set(newest.members) - {self.id}:
                self._progress[gone] = Progress(next_index)
                self._departing[gone] = [index, 0]
        me = self._progress[self.id]
        me.match_index = self._stable_last_index
        me.recent_active = True
        me.read_round_acked = 1 << 62  # the leader always agrees with itself
        me.state = ReplicationState.REPLICATE
        self._events.append(BecameLeader(self.current_term, votes))
        # Section 5.4.2 / 8: an entry of our own term lets earlier entries commit, and
        # lets read-only requests learn the commit index.
        self.log.append(Entry(next_index, self.current_term, b"", EntryKind.NOOP))
        self._append_pending = True

    def _become_follower(self, term: int, leader_id: NodeId | None, reason: str) -> None:
        previous_role = self.role
        if term > self.current_term:
            self.current_term = term
            self.voted_for = None
        self._abort_reads()
        self._departing = {}
        # A transfer ends here: stepping down (the target's higher term) is its success.
        self.transferee = None
        self._transfer_campaign = False
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self._votes = {}
        self._progress = {}
        self._append_pending = False
        self._reset_election_timer()
        if previous_role is not Role.FOLLOWER:
            self._events.append(SteppedDown(self.current_term, reason))
        self._events.append(BecameFollower(self.current_term, leader_id))

    def _handle_request_vote(self, msg: RequestVote) -> None:
        up_to_date = self.log.is_up_to_date(msg.last_log_index, msg.last_log_term)
        if msg.pre_vote:
            # A pre-vote changes nothing here: it only asks "would you vote for me?".
            granted = msg.term > self.current_term and up_to_date
            reason = "stale_term" if msg.term <= self.current_term else "log_behind"
            reply_term = msg.term if granted else self.current_term
        else:
            can_vote = self.voted_for == msg.src or (
                self.voted_for is None and self.leader_id is None
            )
            granted = can_vote and up_to_date
            reason = "log_behind" if can_vote else "already_voted"
            reply_term = self.current_term
            if granted:
                self.voted_for = msg.src
                self._reset_election_timer()
        if granted:
            self._events.append(VoteGranted(msg.term, msg.src, msg.pre_vote))
        else:
            self._events.append(VoteRefused(msg.term, msg.src, msg.pre_vote, reason))
        self._send(
            RequestVoteResponse(reply_term, self.id, msg.src, granted, msg.pre_vote, msg.campaign)
        )

    # ----------------------------------------------------------- role dispatch

    def _step_stale(self, msg: Message) -> None:
        self._events.append(
            StaleMessageIgnored(msg.src, type(msg).__name__, msg.term, self.current_term)
        )
        # Tell an old leader or pre-candidate about the newer term; otherwise a leader that
        # a partition left behind could keep its followers from ever electing a new one
        # (with pre-vote and check-quorum, terms no longer rise on their own).
        match msg:
            case AppendEntries() | InstallSnapshot():
                self._send(AppendEntriesResponse(self.current_term, self.id, msg.src, False))
            case Heartbeat():
                self._send(HeartbeatResponse(self.current_term, self.id, msg.src))
            case RequestVote(pre_vote=True):
                self._send(
                    RequestVoteResponse(
                        self.current_term, self.id, msg.src, False, True, msg.campaign
                    )
                )
            case _:
                pass

    def _step_follower(self, msg: Message) -> None:
        match msg:
            case AppendEntries():
                self._follow(msg.src)
                self._handle_append_entries(msg)
            case Heartbeat():
                self._follow(msg.src)
                self._handle_heartbeat(msg)
            case InstallSnapshot():
                self._follow(msg.src)
                self._handle_install_snapshot(msg)
            case RequestVote():
                self._handle_request_vote(msg)
            case TimeoutNow() if msg.src == self.leader_id and self._may_campaign():
                self._campaign_on_request(msg)
            case _:
                self._ignore_unexpected(msg)

    def _step_candidate(self, msg: Message) -> None:
        match msg:
            case AppendEntries() | Heartbeat() | InstallSnapshot():
                # Someone won this term: follow it (section 5.2).
                self._become_follower(self.current_term, msg.src, "leader_found")
                self._step_follower(msg)
            case RequestVote():
                self._handle_request_vote(msg)
            case RequestVoteResponse() if (
                msg.pre_vote == (self.role is Role.PRE_CANDIDATE) and msg.campaign == self._campaign
            ):
                self._votes.setdefault(msg.src, msg.vote_granted)
                self._events.append(VoteReceived(msg.term, msg.src, msg.vote_granted, msg.pre_vote))
                self._check_election_result()
            case _:
                self._ignore_unexpected(msg)

    def _step_leader(self, msg: Message) -> None:
        match msg:
            case AppendEntriesResponse():
                self._handle_append_response(msg)
            case HeartbeatResponse():
                self._handle_heartbeat_response(msg)
            case RequestVote():
                self._handle_request_vote(msg)
            case _:
                self._ignore_unexpected(msg)

    def _ignore_unexpected(self, msg: Message) -> None:
        """A reply to a role we no longer hold (say, vote replies after winning)."""
        self._events.append(
            StaleMessageIgnored(msg.src, type(msg).__name__, msg.term, self.current_term)
        )

    # --------------------------------------------------------------- followers

    def _follow(self, leader_id: NodeId) -> None:
        self._election_elapsed = 0
        if self.leader_id != leader_id:
            self.leader_id = leader_id
            self._events.append(BecameFollower(self.current_term, leader_id))

    def _handle_heartbeat(self, msg: Heartbeat) -> None:
        # The leader caps leader_commit at what it knows we hold, so adopting it is safe.
        self._commit_to(min(msg.leader_commit, self.log.last_index))
        self._send(
            HeartbeatResponse(
                self.current_term, self.id, msg.src, msg.read_round, self.log.last_index
            )
        )

    def _handle_install_snapshot(self, msg: InstallSnapshot) -> None:
        """Figure 13's receiver rules. The answer is an AppendEntriesResponse saying what
        this follower now holds; it leaves with the Ready that persists the snapshot."""
        meta = msg.snapshot.meta
        if meta.index <= self.commit_index:
            # Already have all of it (a duplicate, or a late one): say how far we are.
            match_index = self.commit_index
        elif meta.index <= self.log.last_index and self.log.term_at(meta.index) == meta.term:
            # Our log holds the snapshot's last entry: keep what follows it, and let the
            # state machine apply the entries as usual rather than be replaced.
            self._commit_to(meta.index)
            match_index = meta.index
        else:
            # The snapshot is ahead of or at odds with our log: it replaces all of it.
            self.log.reset(meta.index, meta.term)
            self.snapshot = msg.snapshot
            self._snapshot_to_install = msg.snapshot
            self._base_membership = membership_of(meta)
            self._config_entries = []
            self._use_membership()
            self._commit_to(meta.index)
            self.last_applied = meta.index
            self._stable_last_index = meta.index
            self._unstable_from = meta.index + 1
            self._events.append(SnapshotInstalled(msg.src, meta.index, meta.term))
            match_index = meta.index
        self._send(
            AppendEntriesResponse(
                self.current_term, self.id, msg.src, True, match_index=match_index
            )
        )

    def _handle_append_entries(self, msg: AppendEntries) -> None:
        prev_index, prev_term, entries = msg.prev_log_index, msg.prev_log_term, msg.entries
        if prev_index < self.log.snapshot_index:
            # Everything up to the snapshot is committed and therefore matches.
            entries = entries[self.log.snapshot_index - prev_index :]
            prev_index, prev_term = self.log.snapshot_index, self.log.snapshot_term
        local_term = self.log.term_at(prev_index) if prev_index <= self.log.last_index else None
        if local_term is None or local_term != prev_term:
            self._reject_append(msg, local_term)
            return
        for position, entry in enumerate(entries):
            existing = self.log.term_at(entry.index) if entry.index <= self.log.last_index else None
            if existing == entry.term:
                continue  # already have it: a duplicate must never truncate what follows
            if existing is not None:
                if entry.index <= self.commit_index:
                    self._events.append(
                        CommittedEntryConflict(
                            msg.src, entry.index, existing, entry.term, self.commit_index
                        )
                    )
                    return
                self.log.truncate_from(entry.index)
                self._stable_last_index = min(self._stable_last_index, entry.index - 1)
                self._events.append(LogTruncated(entry.index, entry.term))
                if self._config_entries and self._config_entries[-1][0] >= entry.index:
                    # A configuration cut from the log is no longer in force.
                    kept = [(i, m) for i, m in self._config_entries if i < entry.index]
                    self._config_entries = kept
                    self._use_membership()
            self._unstable_from = min(self._unstable_from, entry.index)
            for new_entry in entries[position:]:
                self.log.append(new_entry)
                if new_entry.kind is EntryKind.CONFIG:
                    self._config_entries.append(
                        (new_entry.index, Membership.decode(new_entry.data))
                    )
                    self._use_membership()
            break
        match_index = msg.prev_log_index + len(msg.entries)
        self._commit_to(min(msg.leader_commit, match_index))
        self._send(
            AppendEntriesResponse(
                self.current_term, self.id, msg.src, True, match_index=match_index
            )
        )

    def _reject_append(self, msg: AppendEntries, local_term: int | None) -> None:
        if local_term is None:
            conflict_term, conflict_index = 0, self.log.last_index + 1
        else:
            conflict_term = local_term
            conflict_index = self.log.first_index_of_term(msg.prev_log_index)
        self._events.append(
            AppendRejected(msg.src, msg.prev_log_index, conflict_term, conflict_index)
        )
        self._send(
            AppendEntriesResponse(
                self.current_term,
                self.id,
                msg.src,
                False,
                rejected_index=msg.prev_log_index,
                conflict_term=conflict_term,
                conflict_index=conflict_index,
            )
        )

    def _commit_to(self, index: int) -> None:
        if index > self.commit_index:
            self._events.append(CommitAdvanced(self.commit_index, index))
            self.commit_index = index

    # ------------------------------------------------------------------ leader

    def _handle_append_response(self, msg: AppendEntriesResponse) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:  # not a member (any more): nothing to track
            self._ignore_unexpected(msg)
            return
        pr.recent_active = True
        if msg.success:
            pr.probe_sent = False
            if pr.state is ReplicationState.SNAPSHOT and msg.match_index < pr.pending_snapshot:
                # An answer to something sent before the snapshot: it is still on its way.
                if msg.match_index > pr.match_index:
                    pr.match_index = msg.match_index
                    self._maybe_commit()
                return
            if msg.match_index > pr.match_index:
                pr.match_index = msg.match_index
                pr.acknowledge(msg.match_index)
                if pr.state is not ReplicationState.REPLICATE:
                    pr.become_replicate()
                else:
                    pr.next_index = max(pr.next_index, msg.match_index + 1)
                self._maybe_commit()
            elif pr.state is ReplicationState.PROBE and msg.match_index >= pr.next_index - 1:
                # The probe matched below what we believed acknowledged (after a back-off
                # under match_index): resume from where the follower really is.
                pr.become_replicate()
                pr.next_index = msg.match_index + 1
            if msg.src == self.transferee and pr.match_index == self.log.last_index:
                self._send_timeout_now(msg.src)
            self._send_append(msg.src)
            return
        if pr.state is ReplicationState.SNAPSHOT:
            self._ignore_unexpected(msg)  # an answer to an append sent before the snapshot
            return
        # A probe is answered by the rejection of exactly its own prev_log_index. In
        # pipelined mode a rejection below match_index predates an acknowledgement; one *at*
        # match_index is trusted, because a follower that lost acknowledged entries (a
        # damaged disk cut by recovery) rejects exactly there forever, and ignoring it left
        # the leader stuck on that follower until the leadership changed.
        if pr.state is ReplicationState.PROBE:
            stale = msg.rejected_index != pr.next_index - 1
        else:
            stale = msg.rejected_index < pr.match_index
        if stale:
            self._ignore_unexpected(msg)
            return
        next_index = msg.conflict_index
        if msg.conflict_term:
            last_of_term = self.log.last_index_of_term(msg.conflict_term)
            if last_of_term is not None:
                next_index = last_of_term + 1
        # Below our first entry means the follower needs the snapshot (_send_append).
        next_index = max(1, min(next_index, msg.rejected_index))
        pr.become_probe(next_index)
        self._events.append(FollowerBackedOff(msg.src, next_index))
        self._send_append(msg.src)

    def _handle_heartbeat_response(self, msg: HeartbeatResponse) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:
            self._ignore_unexpected(msg)
            return
        pr.recent_active = True
        pr.probe_sent = False
        if msg.last_index < pr.match_index and pr.state is not ReplicationState.SNAPSHOT:
            # Answers come in order on one connection, and a follower's log never shrinks
            # below what it acknowledged to this leader: it lost entries (a wiped or damaged
            # disk). Find where it really is; commit_index never moves back for this.
            pr.match_index = msg.last_index
            pr.become_probe(msg.last_index + 1)
            self._events.append(FollowerBackedOff(msg.src, msg.last_index + 1))
        if msg.read_round > pr.read_round_acked:
            pr.read_round_acked = msg.read_round
            self._release_confirmed_reads()
        if pr.state is ReplicationState.REPLICATE and (
            len(pr.inflight) >= self.config.max_inflight_appends
        ):
            pr.inflight.popleft()
        if pr.match_index < self.log.last_index:
            # An append may have been lost; an empty one makes the follower say where it is.
            self._send_append(msg.src, send_if_empty=True)

    def _broadcast_append(self) -> None:
        for peer in self._replicas():
            self._send_append(peer)

    def _send_append(self, peer: NodeId, *, send_if_empty: bool = False) -> None:
        pr = self._progress.get(peer)
        if pr is None:  # stepped down meanwhile (a removed leader), or not a member
            return
        if pr.state is ReplicationState.SNAPSHOT:
            return  # its answer (or a timeout) comes first
        if pr.next_index <= self.log.snapshot_index:
            self._send_snapshot(peer, pr)
            return
        limit = self.config.max_entries_per_append
        while True:
            if pr.state is ReplicationState.PROBE and pr.probe_sent:
                return
            if len(pr.inflight) >= self.config.max_inflight_appends:
                return
            first = pr.next_index
            last = min(self.log.last_index + 1, first + limit)
            entries = self._bounded(self.log.slice(first, last))
            if not entries and not send_if_empty and pr.state is ReplicationState.REPLICATE:
                return
            prev_index = first - 1
            prev_term = self.log.term_at(prev_index)
            assert prev_term is not None, "next_index beyond the leader's log"
            self._send(
                AppendEntries(
                    self.current_term,
                    self.id,
                    peer,
                    prev_index,
                    prev_term,
                    entries,
                    self.commit_index,
                )
            )
            if pr.state is ReplicationState.PROBE:
                pr.probe_sent = True
                return
            if not entries:
                return
            pr.next_index = entries[-1].index + 1
            pr.inflight.append(entries[-1].index)
            send_if_empty = False

    def _send_snapshot(self, peer: NodeId, pr: Progress) -> None:
        snapshot = self.snapshot
        if snapshot is None:  # a compacted log always has its snapshot: our own bug
            raise RuntimeError(f"entries up to {self.log.snapshot_index} gone and no snapshot")
        self._send(InstallSnapshot(self.current_term, self.id, peer, snapshot))
        pr.become_snapshot(snapshot.meta.index)
        self._events.append(SnapshotSent(peer, snapshot.meta.index, snapshot.meta.term))

    def _bounded(self, entries: tuple[Entry, ...]) -> tuple[Entry, ...]:
        """The longest prefix within ``max_bytes_per_append`` (always at least one entry)."""
        budget = self.config.max_bytes_per_append
        for position, entry in enumerate(entries):
            budget -= len(entry.data) + len(entry.context) + ENTRY_OVERHEAD
            if budget < 0:
                return entries[: max(position, 1)]
        return entries

    def _maybe_commit(self) -> None:
        if not self._voters:
            return
        matches = sorted((self._progress[v].match_index for v in self._voters), reverse=True)
        candidate = matches[self._quorum - 1]
        # Figure 8: only an entry of the current term commits by counting replicas.
        if candidate > self.commit_index and self.log.term_at(candidate) == self.current_term:
            self._commit_to(candidate)
            if self._reads_awaiting_commit:
                self._reads_unsent.extend(self._reads_awaiting_commit)
                self._reads_awaiting_commit.clear()
            if self.id not in self._voters and self._membership_committed():
                # Dissertation 4.2.2: a leader removed by a change steps down once the
                # change is committed (it managed the cluster until then). It first tells
                # a remaining voter that holds its whole log to campaign at once, so the
                # cluster does not wait out an election timeout for a new leader.
                self._hand_over_on_removal()
                self._become_follower(self.current_term, None, "removed")

    def _hand_over_on_removal(self) -> None:
        """TimeoutNow to the voter of the new configuration with the most of the log, if it
        has all of it (the one that can win at once); otherwise the others elect as usual."""
        caught_up = [
            v for v in sorted(self._voters) if self._progress[v].match_index == self.log.last_index
        ]
        if caught_up:
            self._send_timeout_now(caught_up[0])

    # -------------------------------------------------------------- membership

    def _may_campaign(self) -> bool:
        """A voter campaigns; so does a member that an uncommitted change removes. Without
        the second rule a leader that appended its own removal and then crashed left the
        others stuck: the one member holding the entry (not a voter in it) never
        campaigned, and refused the others, whose logs were behind its own (found by the
        simulator). Such a leader, once elected, commits its removal and steps down."""
        if self.id in self._voters:
            return True
        if self._membership_committed():
            return False
        before = (
            self._config_entries[-2][1] if len(self._config_entries) > 1 else self._base_membership
        )
        return self.id in before.voters

    def _membership_committed(self) -> bool:
        return not self._config_entries or self._config_entries[-1][0] <= self.commit_index

    def _use_membership(self, *, announce: bool = True) -> None:
        """Put the newest configuration in the log (else the base one) in force."""
        index, membership = (
            self._config_entries[-1]
            if self._config_entries
            else (self.log.snapshot_index, self._base_membership)
        )
        changed = membership != self.membership
        self.membership = membership
        self._voters = frozenset(membership.voters)
        self._peers = tuple(n for n in membership.members if n != self.id)
        self._quorum = membership.quorum
        if self.role is Role.LEADER:
            for peer in self._peers:
                self._departing.pop(peer, None)
                if peer not in self._progress:
                    self._progress[peer] = Progress(self.log.last_index + 1)
            for gone in [n for n in self._progress if n != self.id and n not in self._peers]:
                self._departing.setdefault(gone, [index, 0])
            if self.transferee is not None and self.transferee not in self._voters:
                self._abort_transfer("target_removed")
        if announce and changed:
            self._events.append(MembershipChanged(index, membership.voters, membership.learners))

    @property
    def departing(self) -> tuple[NodeId, ...]:
        """Removed members this leader still tells about their removal (see __init__)."""
        return tuple(self._departing)

    def _replicas(self) -> tuple[NodeId, ...]:
        return (*self._peers, *self._departing) if self._departing else self._peers

    def _tick_departing(self) -> None:
        for peer, state in list(self._departing.items()):
            if state[0] > self.commit_index:
                continue
            state[1] += 1
            if state[1] >= DEPARTING_TIMEOUTS * self.config.election_timeout_ticks:
                del self._departing[peer]
                self._progress.pop(peer, None)

    # ------------------------------------------------------------------ helpers

    def _send(self, msg: Message) -> None:
        self._messages.append(msg)

    def _hard_state(self) -> HardState:
        return HardState(self.current_term, self.voted_for)

    def _require_no_pending_ready(self) -> None:
        if self._pending_ready is not None:
            raise RuntimeError("input given between ready() and advance()")


def membership_of(meta: SnapshotMeta) -> Membership:
    """The configuration a snapshot carries: its config entry, or its bare voters."""
    return Membership.decode(meta.config) if meta.config else Membership(tuple(meta.voters))
