"""The driver: the one task that owns the Raft core, the log storage and the state machine.

Everything else talks to it through one bounded channel (``Driver.submit``), so consensus
state needs no locks. Each loop turn takes whatever input has queued up, feeds it to the
core, then handles the core's Ready in the contract's order: make the hard state and entries
durable (one fsync in a worker thread for the whole batch: group commit), send the
messages, apply committed entries, answer the clients whose requests completed.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import structlog
import trio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from observability.logs import node_fields
from observability.metrics import RaftMetrics
from observability.propagation import entry_context
from observability.sampling import EDGE_ATTRIBUTE, EDGE_LEASE
from raftd import kv, kvsnapshot
from raftd.config import ConfigError, NodeConfig, parse_address
from raftd.core import (
    AppendEntries,
    AppendEntriesResponse,
    Config,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    LeaderTransferring,
    Membership,
    MembershipError,
    Message,
    NotLeaderError,
    RaftNode,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    Snapshot,
)
from raftd.core import events as ev
from raftd.core.types import SnapshotMeta
from raftd.runtime.background_sync import BackgroundSync
from raftd.runtime.chaos import ChaosStorage
from raftd.runtime.freshness import Freshness
from raftd.runtime.leases import LeaseClock
from raftd.runtime.roster import Member, Roster
from raftd.runtime.spans import RaftSpans
from raftd.runtime.watch import WatchHub
from raftd.storage import SnapshotStorage, StorageError, identity, stage_ready
from raftd.storage.fs import OsFileSystem
from wire.api import (
    ClientReply,
    ErrorCode,
    ErrorReply,
    GetReply,
    KeyValue,
    LeaseReply,
    MemberChangeReply,
    MemberChangeRequest,
    MemberInfo,
    MemberListReply,
    MoveLeaderReply,
    RangeReply,
    RangeRequest,
    StatusReply,
    WriteReply,
)
from wire.stream import TurnWrites
from wire.tracecontext import TraceParent

log = structlog.get_logger("raftd.driver")

# Client operations and peer messages queue apart: when they shared one inbox, queued
# client requests refilled it as fast as it drained and peer messages (acknowledgements,
# heartbeats) were the ones dropped, which could trip check-quorum under overload.
INBOX_CAPACITY = 4096
PEER_INBOX_CAPACITY = 4096
MAX_INPUTS_PER_TURN = 512
MAX_PEER_INPUTS_PER_TURN = 1024


class ReplyBox:
    """Where the driver leaves a client's answer.

    Either a task waits for it (``wait``), or the box was made with ``on_reply``, which the
    driver calls with the answer: the client port's common path, which then needs no task,
    event or context switch per request. ``on_reply`` runs inside the driver's turn, so it
    must be quick and must not raise."""

    __slots__ = ("_event", "_on_reply", "reply")

    def __init__(self, on_reply: Callable[[ClientReply], None] | None = None) -> None:
        self._event: trio.Event | None = None
        self._on_reply = on_reply
        self.reply: ClientReply | None = None

    def set(self, reply: ClientReply) -> None:
        if self.reply is not None:
            return
        self.reply = reply
        if self._on_reply is not None:
            self._on_reply(reply)
        if self._event is not None:
            self._event.set()

    async def wait(self) -> ClientReply:
        if self.reply is None:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
        assert self.reply is not None
        return self.reply


@dataclass(frozen=True, slots=True)
class Write:
    request: kv.Request
    span: Span | None = None  # the client request's server span, if sampled
    box: ReplyBox = field(default_factory=ReplyBox)
    enqueued_ns: int = field(default_factory=time.time_ns)


@dataclass(frozen=True, slots=True)
class Read:
    """A linearizable read of one key, or of a range when ``query`` is set."""

    key: str
    span: Span | None = None
    box: ReplyBox = field(default_factory=ReplyBox)
    enqueued_ns: int = field(default_factory=time.time_ns)
    query: RangeRequest | None = None


@dataclass(frozen=True, slots=True)
class StaleRead:
    key: str
    max_staleness_s: float
    box: ReplyBox = field(default_factory=ReplyBox)
    query: RangeRequest | None = None


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Renew a lease (``LeaseKeepAliveRequest``): the leader's clock alone keeps it."""

    lease: int
    box: ReplyBox = field(default_factory=ReplyBox)


@dataclass(frozen=True, slots=True)
class Status:
    state_hash: bool = False
    box: ReplyBox = field(default_factory=ReplyBox)


@dataclass(frozen=True, slots=True)
class MoveLeader:
    """Hand the leadership to the member named ``target`` (raftctl move-leader, or a
    leader shutting down); answered once it leads, or when the transfer fails."""

    target: str
    box: ReplyBox = field(default_factory=ReplyBox)


@dataclass(frozen=True, slots=True)
class ListMembers:
    box: ReplyBox = field(default_factory=ReplyBox)


@dataclass(frozen=True, slots=True)
class ChangeMembers:
    """Add, promote or remove one member (``MemberChangeRequest``). ``span``: the
    request's server span, if sampled: the change is then one trace, like a write."""

    request: MemberChangeRequest
    span: Span | None = None
    box: ReplyBox = field(default_factory=ReplyBox)


class MemberRemoved(Exception):
    """This member is no longer in the cluster's configuration: it stops serving."""


# A removed member answers for this long before it stops: the reply to the request that
# removed it (a leader removing itself) must reach the client first.
REMOVED_GRACE_S = 1.0

ClientOp = Write | Read | StaleRead | KeepAlive | Status | MoveLeader | ListMembers | ChangeMembers

# A range reply stops adding keys past this many bytes of keys and values (and says there
# is more), well inside the 8 MiB frame limit whatever the request's own limit.
MAX_RANGE_REPLY_BYTES = 4 * 1024 * 1024


Send = Callable[[Message, TraceParent | None, Span | None, float | None], None]


@dataclass(frozen=True, slots=True)
class Inbound:
    """A peer message, dated by the transport when it arrived (not when we dequeue it).

    ``built_at`` is when the sender built it, in our clock (arrival minus the time the
    frame says it waited); ``leader_fresh`` is the instant the sending leader's state was
    current, when it says so (see ``freshness``)."""

    msg: Message
    parent: TraceParent | None
    built_at: float
    leader_fresh: float | None


class _Wake:
    """Rings the driver when a peer message lands while it waits on the client inbox."""


WAKE = _Wake()
SWEEP_INTERVAL_S = 1.0


class Driver:
    def __init__(
        self,
        config: NodeConfig,
        storage: SnapshotStorage,
        send: Send,
        *,
        client_addrs: dict[str, str] | None = None,
        rng: random.Random | None = None,
        tracer: trace.Tracer | None = None,
        metrics: RaftMetrics | None = None,
        roster: Roster | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self._send = send
        self.metrics = metrics if metrics is not None else RaftMetrics()
        # Names and addresses follow the configuration in force (raftd.runtime.roster);
        # ``names`` is the roster's own dict, updated in place.
        self.roster = roster if roster is not None else Roster(config)
        self.names = self.roster.names
        self.spans = RaftSpans(tracer or trace.get_tracer("raftd"), self.names)
        self.client_addrs = client_addrs if client_addrs is not None else {}
        self.client_addrs[config.name] = str(config.advertised_client_addr)
        core_config = Config(
            node_id=config.node_id,
            voters=config.bootstrap_voters,
            election_timeout_ticks=config.election_timeout_ticks,
            heartbeat_interval_ticks=config.heartbeat_interval_ticks,
        )
        durable = storage.load()
        self.node = RaftNode(core_config, rng or random.Random(), durable)
        self.roster.update(self.node.membership)
        store: type[kv.KVStore] = kv.KVStore
        if "no-dedup" in config.test_mutations:
            from raftd.runtime.mutations import NoDedupStore

            store = NoDedupStore
        # A restart begins from the newest snapshot (the core restarts from its index).
        self.kv = store() if durable.snapshot is None else store.restore(durable.snapshot.data)
        self.kv.changes = []
        self.watches = WatchHub(floor=self.kv.last_applied_index)
        self.applied_index = self.node.last_applied
        self.loop_turned_at = time.monotonic()
        # Applied since the last snapshot, to decide the next one; one in the making at a
        # time, and its result waits here until the loop can hand it to the core.
        self._since_snapshot = (0, 0)  # (entries, bytes of entry data)
        self._snapshotting = False
        self._snapshot_ready: Snapshot | None = None
        # The leader's own fsync runs beside the loop; how far it got waits here.
        self._background_sync = BackgroundSync(self._sync_staged, self._durable_to)
        # What a turn sends (messages, client replies) the loop writes itself.
        self.turn_writes = TurnWrites()
        self._durable: tuple[int, int] | None = None
        self._last_fsync_s = 0.0  # how long the last fsync took (``_sync_in_loop``)
        self.inbox_send, self._inbox = trio.open_memory_channel[ClientOp | _Wake](INBOX_CAPACITY)
        self._peer_inbox: deque[Inbound] = deque()
        self._helpers: trio.Nursery | None = None
        # index -> (term, box, the request as proposed: applying it then needs no decode)
        self._writes: dict[int, tuple[int, ReplyBox, kv.Request]] = {}
        self._reads: dict[bytes, Read] = {}
        self._reads_ready: list[tuple[int, Read]] = []  # (index to apply first, read)
        self._next_read = 0
        # (deadline, box) of every write and read waiting on Raft, oldest first; a box that
        # is answered by then ignores the timeout.
        self._deadlines: deque[tuple[float, ReplyBox]] = deque()
        self.freshness = Freshness()
        self.leases = LeaseClock()
        self._contact_at_dequeue = "contact-at-dequeue" in config.test_mutations
        self._append_sent: dict[int, list[tuple[int, float]]] = {}  # peer -> (last index, t)
        self._vote_sent: dict[tuple[int, bool], float] = {}
        # Leadership transfers waiting for their outcome: (target, box).
        self._handovers: list[tuple[int, ReplyBox]] = []
        # Membership changes waiting to commit: index -> (term, box, name, id).
        self._member_changes: dict[int, tuple[int, ReplyBox, str, int]] = {}
        self._removed_at: int | None = None
        # Removal is noticed only by a member that was in a committed configuration: a new
        # member applies older configurations (from before it was added) on its way up,
        # after every restart too, so this starts from what is in force where applying
        # resumes, not from the newest configuration in the log.
        applied = self.node.membership_at(self.node.last_applied)
        self._was_member = self.node.id in applied.members
        self._role = self.node.role
        membership = self.node.membership
        learner = self.node.id in membership.learners
        self.metrics.membership(len(membership.voters), len(membership.learners), learner)
        node_fields.update(node=config.name, role=self._role.value, term=self.node.current_term)

    # ----------------------------------------------------------- the API

    def deliver(
        self,
        msg: Message,
        parent: TraceParent | None = None,
        built_at: float | None = None,
        leader_fresh: float | None = None,
    ) -> None:
        """A peer message arrived. Never blocks the network reader: if the driver is
        behind, the message is dropped (Raft retransmits) and counted."""
        inbox = self._peer_inbox
        if len(inbox) >= PEER_INBOX_CAPACITY:
            self.metrics.message_dropped(type(msg).__name__, "inbox_full")
            return
        if built_at is None:
            built_at = trio.current_time()
        inbox.append(Inbound(msg, parent, built_at, leader_fresh))
        if len(inbox) == 1:
            # The loop may be asleep on the client inbox. If that inbox is full the loop
            # is not asleep, and it takes peer messages first on every turn anyway.
            with contextlib.suppress(trio.WouldBlock):
                self.inbox_send.send_nowait(WAKE)

    async def submit(self, op: ClientOp) -> ClientReply:
        """Queue a client operation and wait for its answer (callers bound the wait)."""
        await self.inbox_send.send(op)
        return await op.box.wait()

    async def hand_over(self) -> str | None:
        """Before this member stops: if it leads, hand the leadership to the follower
        with the most of the log and wait (at most two election timeouts) for the outcome,
        so the cluster does not wait out an election timeout for a new leader. Returns a
        line for the log, or None when there was nothing to hand over."""
        voters = self.node.membership.voters
        peers = [i for i in voters if i != self.node.id]
        if self.node.role is not Role.LEADER or not peers:
            return None
        target = max(peers, key=lambda peer: self.node.progress(peer).match_index)
        limit = 2 * self.config.election_timeout_ticks * self.config.tick_seconds
        with trio.move_on_after(limit):
            reply = await self.submit(MoveLeader(self.names[target]))
            if isinstance(reply, MoveLeaderReply):
                return f"handed the leadership to {reply.leader} (term {reply.term})"
            assert isinstance(reply, ErrorReply)
            return f"could not hand the leadership over: {reply.message}"
        return f"could not hand the leadership to {self.names[target]} in {limit:.1f} s"

    def leader_name(self) -> str | None:
        leader = self.node.leader_id
        return None if leader is None else self.names[leader]

    # ---------------------------------------------------------- the loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        tick = self.config.tick_seconds
        log.info(
            "raft node starting",
            term=self.node.current_term,
            voted_for=self._name(self.node.voted_for),
            last_index=self.node.log.last_index,
        )
        async with trio.open_nursery() as nursery:
            self._helpers = nursery
            nursery.start_soon(self._background_sync.run)
            task_status.started()
            await self._loop(tick)

    async def _loop(self, tick: float) -> None:
        next_tick = trio.current_time() + tick
        next_sweep = trio.current_time() + SWEEP_INTERVAL_S
        max_ticks = 2 * self.config.election_timeout_ticks
        while True:
            received: ClientOp | _Wake | None = None
            if self._peer_inbox or self.node.has_ready():
                await trio.lowlevel.checkpoint()
            else:
                with trio.move_on_at(next_tick):
                    received = await self._inbox.receive()
            self.turn_writes.open()
            try:
                if received is not None:
                    self._handle(received)
                if self._durable is not None:
                    self.node.persisted(*self._durable)
                    self._durable = None
                self._take_peer_messages()
                for _ in range(MAX_INPUTS_PER_TURN):
                    try:
                        item = self._inbox.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self._handle(item)
                if self._snapshot_ready is not None:
                    self._compact(self._snapshot_ready)
                    self._snapshot_ready = None
                now = trio.current_time()
                if now >= next_tick:
                    # Count every tick that passed, so a slow turn does not stretch logical
                    # time (an election timeout of 10 ticks once took as many slow turns);
                    # after a long stall (a suspended process) start counting afresh.
                    ticks = 0
                    while now >= next_tick and ticks < max_ticks:
                        self.node.tick()
                        next_tick += tick
                        ticks += 1
                    next_tick = max(next_tick, now)
                    self._expire(now)
                    self._check_leases(now)
                    # /health reads it from the exporter thread: a tick at least every tick
                    # length while the loop turns, none while it is wedged.
                    self.loop_turned_at = time.monotonic()
                if now >= next_sweep:
                    self.spans.sweep()
                    next_sweep = now + SWEEP_INTERVAL_S
                await self._process_ready(budget_s=tick / 2)
                self._maybe_snapshot()
            finally:
                self.turn_writes.close()

    def _take_peer_messages(self) -> None:
        inbox = self._peer_inbox
        for _ in range(min(len(inbox), MAX_PEER_INPUTS_PER_TURN)):
            self._step(inbox.popleft())

    def _handle(self, item: ClientOp | _Wake) -> None:
        match item:
            case Write():
                self._propose(item)
            case Read():
                self._read_index(item)
            case StaleRead():
                item.box.set(self._stale_read(item))
            case KeepAlive():
                item.box.set(self._keep_alive(item.lease))
            case Status(state_hash=True) if self._helpers is not None:
                state = self.kv.hashable_state()  # now, so it matches the status
                self._helpers.start_soon(self._reply_with_hash, self._status(), state, item.box)
            case Status():
                item.box.set(self._status(item.state_hash))
            case MoveLeader():
                self._move_leader(item)
            case ListMembers():
                item.box.set(self._members())
            case ChangeMembers():
                self._change_members(item)
            case _Wake():
                pass

    def _step(self, inbound: Inbound) -> None:
        msg = inbound.msg
        now = trio.current_time()
        self.metrics.message_received(type(msg).__name__)
        self._rpc_round_trip(msg, now)
        self.spans.incoming(msg, inbound.parent)
        was_leading = self.node.role is Role.LEADER
        self.node.step(msg)
        if not was_leading and self.node.role is Role.LEADER:
            self.freshness.forget_answers()
        term = self.node.current_term
        if msg.term != term:
            return
        if isinstance(msg, AppendEntriesResponse | HeartbeatResponse):
            if was_leading and self.node.role is Role.LEADER:
                self.freshness.heard_from(msg.src, inbound.built_at)
        elif isinstance(msg, AppendEntries | Heartbeat) and self.node.leader_id == msg.src:
            if self._contact_at_dequeue:
                self.freshness.stamp(now)  # the old bug, kept as a mutant for the nemesis
            elif inbound.leader_fresh is not None:
                commit = msg.commit_index if isinstance(msg, Heartbeat) else msg.leader_commit
                self.freshness.leader_says(inbound.leader_fresh, commit, self.applied_index)

    # ------------------------------------------------------- client ops

    def _not_leader(self) -> ErrorReply:
        leader = self.leader_name()
        if leader is None:
            return ErrorReply(
                ErrorCode.NO_LEADER, "no leader is known right now; retry shortly", True
            )
        return ErrorReply(
            ErrorCode.NOT_LEADER,
            f"{self.config.name} is not the leader; {leader} is",
            True,
            leader,
            self.client_addrs.get(leader),
        )

    def _members(self) -> ClientReply:
        """The configuration in force, with the leader's view of each member."""
        node = self.node
        if node.role is not Role.LEADER:
            return self._not_leader()
        now = trio.current_time()
        last = node.log.last_index
        infos = []
        for member in node.membership.members:
            name = self._name(member) or str(member)
            address = self.roster.members[member].peer if member in self.roster.members else None
            contact: float | None = 0.0
            if member == node.id:
                match = last
            else:
                match = node.progress(member).match_index
                heard = self.freshness.heard_at(member)
                contact = None if heard is None else round(max(0.0, now - heard), 3)
            infos.append(
                MemberInfo(
                    name,
                    member,
                    "voter" if member in node.membership.voters else "learner",
                    str(address) if address is not None else "",
                    self.client_addrs.get(name),
                    match,
                    last - match,
                    contact,
                )
            )
        return MemberListReply(self.config.name, node.current_term, tuple(infos))

    def _change_members(self, op: ChangeMembers) -> None:
        """Propose one membership change; answered when it commits (``_apply``)."""
        request, node = op.request, self.node
        if node.role is not Role.LEADER:
            op.box.set(self._not_leader())
            return
        context = entry_context(op.span) if op.span is not None else ""
        try:
            wanted, member_id = self._wanted_membership(request)
            index, term = node.propose_membership(wanted, context)
        except (MembershipError, ConfigError) as exc:
            op.box.set(ErrorReply(ErrorCode.BAD_REQUEST, str(exc), True))
            return
        except LeaderTransferring as exc:
            op.box.set(self._handing_over(exc.target))
            return
        log.info(
            "membership change proposed",
            action=request.action,
            member=request.name,
            id=member_id,
            index=index,
        )
        self._member_changes[index] = (term, op.box, request.name, member_id)
        self._deadlines.append((trio.current_time() + self.config.request_timeout_s, op.box))

    def _wanted_membership(self, request: MemberChangeRequest) -> tuple[Membership, int]:
        """The configuration ``request`` asks for, with the member's id."""
        current = self.node.membership
        voters, learners = set(current.voters), set(current.learners)
        members = dict(self.roster.members)
        next_id = self.roster.next_id
        # Among the members in force: one a pending change removed may be added back.
        known = next((i for i, m in members.items() if m.name == request.name), None)
        if request.action == "add":
            if known is not None:
                raise MembershipError(f"{request.name!r} is already a member (id {known})")
            if not request.peer_addr or not request.client_addr:
                raise MembershipError("adding a member needs its peer and client addresses")
            peer = parse_address(request.peer_addr, what="--peer-addr")
            parse_address(request.client_addr, what="--client-addr")
            member_id, next_id = next_id, next_id + 1
            members[member_id] = Member(member_id, request.name, peer, request.client_addr)
            (learners if request.learner else voters).add(member_id)
        elif known is None:
            names = ", ".join(sorted(m.name for m in members.values()))
            raise MembershipError(f"{request.name!r} is not a member (members: {names})")
        elif request.action == "promote":
            member_id = known
            if member_id not in learners:
                raise MembershipError(f"{request.name!r} is already a voter")
            learners.discard(member_id)
            voters.add(member_id)
        elif request.action == "remove":
            member_id = known
            voters.discard(member_id)
            learners.discard(member_id)
            del members[member_id]
        else:
            raise MembershipError(f"unknown action {request.action!r} (add, promote, remove)")
        for node_id, member in members.items():
            if member.client is None:  # the bootstrap members' addresses, as heard
                client = self.client_addrs.get(member.name)
                members[node_id] = Member(node_id, member.name, member.peer, client)
        extra = self.roster.encode(members, next_id)
        return Membership.of(voters, learners, extra), member_id

    def _handing_over(self, target: int) -> ErrorReply:
        return ErrorReply(
            ErrorCode.NO_LEADER,
            f"{self.config.name} is handing its leadership to {self._name(target)}; retry shortly",
            True,
        )

    def _move_leader(self, op: MoveLeader) -> None:
        target = self.roster.ids.get(op.target)
        if target is None:
            members = ", ".join(sorted(self.roster.ids))
            why = f"{op.target!r} is not a member (members: {members})"
            op.box.set(ErrorReply(ErrorCode.BAD_REQUEST, why, True))
            return
        if self.node.role is Role.LEADER and target == self.node.id:
            name = self.config.name
            op.box.set(MoveLeaderReply(name, self.node.current_term, name))
            return
        try:
            self.node.transfer_leadership(target)
        except NotLeaderError:
            op.box.set(self._not_leader())
            return
        except ValueError:  # a learner, or a member a pending change removes
            why = f"{op.target!r} is not a voter: only a voter can lead"
            op.box.set(ErrorReply(ErrorCode.BAD_REQUEST, why, True))
            return
        self._handovers.append((target, op.box))
        self._deadlines.append((trio.current_time() + self.config.request_timeout_s, op.box))

    def _handover_ended(
        self, leader: int | None, term: int, aborted: tuple[int, str] | None = None
    ) -> None:
        """Answer the transfers waiting: ``leader`` leads now, or the transfer to one
        target was aborted (target, reason) and only its askers are answered."""
        me = self.config.name
        waiting = []
        for target, box in self._handovers:
            if aborted is not None and target != aborted[0]:
                waiting.append((target, box))
            elif aborted is not None:
                why = f"the transfer to {self._name(target)} was aborted ({aborted[1]}); {me} leads"
                box.set(ErrorReply(ErrorCode.TRANSFER_FAILED, why, True, me))
            elif leader == target:
                box.set(MoveLeaderReply(self.names[target], term, me))
            else:
                why = f"leadership went to {self._name(leader)}, not {self._name(target)}"
                box.set(ErrorReply(ErrorCode.TRANSFER_FAILED, why, True))
        self._handovers = waiting

    def _rpc_round_trip(self, msg: Message, now: float) -> None:
        """RPC latency for every AppendEntries and RequestVote, sampled or not."""
        match msg:
            case AppendEntriesResponse(success=True):
                sent = self._append_sent.get(msg.src)
                while sent and sent[0][0] <= msg.match_index:
                    self.metrics.rpc_completed("AppendEntries", now - sent.pop(0)[1])
            case RequestVoteResponse():
                started = self._vote_sent.pop((msg.src, msg.pre_vote), None)
                if started is not None:
                    self.metrics.rpc_completed("RequestVote", now - started)
            case _:
                pass

    def _propose(self, write: Write) -> None:
        context = ""
        if write.span is not None:
            context = entry_context(write.span)
        try:
            index, term = self.node.propose(kv.encode_request(write.request), context)
        except NotLeaderError:
            write.box.set(self._not_leader())
            return
        except LeaderTransferring as exc:
            write.box.set(self._handing_over(exc.target))
            return
        self._writes[index] = (term, write.box, write.request)
        self._deadlines.append((trio.current_time() + self.config.request_timeout_s, write.box))
        if context:
            span = self.spans.tracer.start_span(
                "raft.propose",
                context=trace.set_span_in_context(write.span) if write.span else None,
                start_time=write.enqueued_ns,
                attributes={
                    "raft.index": index,
                    "raft.term": term,
                    "raftd.inbox_wait_ms": (time.time_ns() - write.enqueued_ns) / 1e6,
                },
            )
            span.end()

    def _read_index(self, read: Read) -> None:
        self._next_read += 1
        context = self._next_read.to_bytes(8, "big")
        try:
            self.node.read_index(context)
        except NotLeaderError:
            read.box.set(self._not_leader())
            return
        self._reads[context] = read
        self._deadlines.append((trio.current_time() + self.config.request_timeout_s, read.box))
        if read.span is not None and read.span.is_recording():
            read.span.add_event(
                "raft.read_index",
                {"raftd.inbox_wait_ms": (time.time_ns() - read.enqueued_ns) / 1e6},
            )

    def _stale_read(self, read: StaleRead) -> ClientReply:
        age = self._state_age(trio.current_time())
        if age is None or age > read.max_staleness_s:
            known = "no contact with a leader" if age is None else f"last contact {age:.3f} s ago"
            return ErrorReply(
                ErrorCode.TOO_STALE,
                f"{self.config.name} cannot serve a read at most {read.max_staleness_s} s "
                f"stale ({known})",
                True,
                self.leader_name(),
                self.client_addrs.get(self.leader_name() or ""),
            )
        return self._read_reply(read.key, read.query, round(age, 6))

    def _read_reply(
        self, key: str, query: RangeRequest | None, stale_age_s: float | None = None
    ) -> GetReply | RangeReply:
        """The answer from the applied state as it is now, with the revision it is at."""
        revision, name = self.kv.last_applied_index, self.config.name
        stale = stale_age_s is not None
        if query is None:
            stored = self.kv.stored(key)
            if stored is None:
                return GetReply(False, None, name, stale, stale_age_s, revision)
            return GetReply(True, stored.value, name, stale, stale_age_s, revision, *stored[1:])
        found, more = self.kv.range(query.start, query.end, query.limit)
        items: list[KeyValue] = []
        size = 0
        for key_found, stored in found:
            size += len(key_found) + len(stored.value)
            if items and size > MAX_RANGE_REPLY_BYTES:
                more = True
                break
            items.append(KeyValue(key_found, *stored))
        return RangeReply(tuple(items), more, revision, name, stale, stale_age_s)

    def _state_age(self, now: float) -> float | None:
        """Seconds before which every acknowledged write is applied here (None: unknown)."""
        return self.freshness.age(now, self._leader_point(now))

    def _leader_point(self, now: float) -> float:
        """When this leader's applied state was last known current (see ``freshness``)."""
        node = self.node
        if (
            node.role is not Role.LEADER
            or node.log.term_at(self.applied_index) != node.current_term
        ):
            return -math.inf
        peers = (p for p in node.membership.voters if p != node.id)
        return self.freshness.leader_point(now, peers, node.quorum)

    async def _reply_with_hash(
        self, status: StatusReply, state: kv.HashableState, box: ReplyBox
    ) -> None:
        """Hash a copy of the store in a worker thread: at a million keys the digest took
        long enough inside the loop to hold back heartbeats. The copy is taken in the loop
        with the status, so the hash matches ``status.last_applied``."""
        box.set(replace(status, state_hash=await trio.to_thread.run_sync(kv.digest, state)))

    def _status(self, with_state_hash: bool = False) -> StatusReply:
        leader = self.leader_name()
        return StatusReply(
            node=self.config.name,
            role=self.node.role.value,
            term=self.node.current_term,
            leader=leader,
            commit_index=self.node.commit_index,
            last_applied=self.applied_index,
            last_index=self.node.log.last_index,
            client_addr=str(self.config.advertised_client_addr),
            leader_addr=self.client_addrs.get(leader) if leader else None,
            state_hash=self.kv.state_hash() if with_state_hash else None,
        )

    # ------------------------------------------------------------ Ready

    async def _process_ready(self, budget_s: float = math.inf) -> None:
        """Handle Readies until none is left or ``budget_s`` is spent: a restarted member
        applying its whole log gets it in chunks, with ticks and messages in between."""
        deadline = trio.current_time() + budget_s
        while self.node.has_ready() and trio.current_time() < deadline:
            ready = self.node.ready()
            self.spans.before_send(ready.events)
            durable = (
                ready.hard_state is not None or bool(ready.entries) or ready.snapshot is not None
            )
            if ready.snapshot is not None:
                await self._install(ready.snapshot)
            sent = ready.send_before_persist or not durable
            if sent:
                # A leader's fsync overlaps the round trip to its followers.
                self._send_messages(ready)
                self.turn_writes.flush()
            later = durable and ready.send_before_persist and not self._sync_in_loop(ready)
            if later:
                # A leader's fsync runs beside the loop (raftd.runtime.background_sync),
                # started before the entries are applied so the disk works meanwhile.
                stage_ready(self.storage, ready)
                self._background_sync.staged(ready.entries)
            elif durable:
                # A follower's answers wait for this fsync; applying does not, so it comes
                # after them and the leader hears back one apply sooner.
                # Only when one runs: an Event already set still yields to every other
                # task, a scheduler round on each follower's path to its fsync.
                if self._background_sync.running:
                    await self._background_sync.idle()
                await self._persist(ready)
                if not sent:
                    self._send_messages(ready)
                    self.turn_writes.flush()
            # Committed entries are durable on a majority already: clients need not wait
            # for this bundle's own fsync to hear about them.
            self._apply(ready)
            self._serve_reads(ready)
            self._observe(ready.events)
            self.spans.after_events(ready.events)
            self.spans.after_ready()
            self.node.advance(ready, persisted=not later)

    def _sync_in_loop(self, ready: Ready) -> bool:
        """Whether a leader syncs ``ready`` in its loop rather than beside it.

        Beside the loop the leader goes on proposing and counting answers while its disk
        works, which is what a busy leader needs. With nothing else in flight (this
        Ready's entries are all that is uncommitted) nothing waits on the loop but this
        write, whose followers answer later than the leader's own fsync ends; the two
        thread hand-offs then only added to its latency and the leader's CPU
        (docs/performance.md). A slow disk (the last fsync took half a tick or more, or a
        fault-injecting one) keeps the fsync beside the loop, so heartbeats never wait
        on it, and a sync already running must finish first."""
        return (
            not self._background_sync.running
            and self._last_fsync_s < self.config.tick_seconds / 2
            and not isinstance(self.storage, ChaosStorage)
            and self.node.commit_index + len(ready.entries) >= self.node.log.last_index
        )

    def _send_messages(self, ready: Ready) -> None:
        now = trio.current_time()
        point = self._leader_point(now)
        lag = None if point == -math.inf else now - point
        applied = self.applied_index
        for msg in ready.messages:
            parent, span = self.spans.outgoing(msg)
            self._send(msg, parent, span, _vouch(msg, lag, applied))
            self.metrics.message_sent(type(msg).__name__)
            if isinstance(msg, AppendEntries) and msg.entries:
                self.metrics.append_entries_sent(len(msg.entries))
                self._append_sent.setdefault(msg.dst, []).append((msg.entries[-1].index, now))
            elif isinstance(msg, RequestVote):
                self._vote_sent[(msg.dst, msg.pre_vote)] = now

    async def _persist(self, ready: Ready) -> None:
        """Stage and sync a Ready whose messages wait for it (a follower's, a candidate's,
        anything with a new term or vote); a sync the leader staged earlier is covered too."""
        stage_ready(self.storage, ready)
        entries = [*self._background_sync.take(), *ready.entries]
        # Anyone else has nothing to do until the fsync is done (its answers wait for it),
        # and handing it to a thread and back cost more than the fsync: at 64 clients,
        # followers spent 18% less CPU and the p99 write fell by half with the fsync done in
        # place. An injected slow disk must not freeze the whole member, though.
        await self._sync(entries, in_thread=isinstance(self.storage, ChaosStorage))

    async def _sync_staged(self, entries: list[Entry]) -> None:
        await self._sync(entries, in_thread=True)

    def _durable_to(self, index: int, term: int) -> None:
        """The background sync's report, for the loop to hand to the core."""
        self._durable = (index, term)
        with contextlib.suppress(trio.WouldBlock):
            self.inbox_send.send_nowait(WAKE)

    async def _sync(self, entries: list[Entry], *, in_thread: bool) -> None:
        started_ns = time.time_ns()
        chaos = self.storage if isinstance(self.storage, ChaosStorage) else None
        try:
            # Not cancellable: an fsync half-done must still finish before we go on.
            if in_thread:
                await trio.to_thread.run_sync(self.storage.sync)
            else:
                self.storage.sync()
        except StorageError as exc:
            if chaos is not None and chaos.last_sync_failed:
                self.metrics.chaos_injected("fsync_fail")
            attributes = chaos.sync_attributes() if chaos is not None else None
            self.spans.fsync(entries, started_ns, time.time_ns(), error=str(exc), chaos=attributes)
            log.error(
                "storage failed: stopping this member so nothing unsafe is acknowledged",
                error=str(exc),
            )
            raise
        ended_ns = time.time_ns()
        self._last_fsync_s = (ended_ns - started_ns) / 1e9
        attributes = None
        if chaos is not None and chaos.last_sync_delay_s > 0:
            self.metrics.chaos_injected("fsync_delay")
            attributes = chaos.sync_attributes()
        self.spans.fsync(entries, started_ns, ended_ns, chaos=attributes)
        self.metrics.fsync((ended_ns - started_ns) / 1e9, len(entries))

    def _apply(self, ready: Ready) -> None:
        leading = self.node.role is Role.LEADER
        entries, size = self._since_snapshot
        for entry in ready.committed:
            self.applied_index = entry.index
            entries += 1
            size += len(entry.data)
            if entry.context and leading:  # a write's or a membership change's trace
                self.spans.committed(entry, self.node.commit_index)
            if entry.kind is EntryKind.CONFIG:
                started_ns = time.time_ns()
                self._configuration_committed(entry)
                if entry.context:
                    self.spans.applied(entry, started_ns, "configuration")
                continue
            if entry.kind is not EntryKind.NORMAL:
                continue
            started_ns = time.time_ns()
            waiting = self._writes.pop(entry.index, None)
            # Our own proposal, still in its place: its bytes are encode_request(request).
            decoded = waiting[2] if waiting is not None and waiting[0] == entry.term else None
            result = self.kv.apply(entry.index, entry.data, decoded)
            changes = self.kv.changes
            if changes:
                self.watches.publish(entry.index, changes, entry.context)
                changes.clear()
            if decoded is not None and self.leases.leading:
                self._lease_applied(decoded.command, result)
            if entry.context:
                self.spans.applied(entry, started_ns, _outcome(result))
            if waiting is None:
                continue
            if decoded is not None:
                waiting[1].set(_write_reply(decoded.command, result, entry.index))
            else:
                waiting[1].set(_leadership_lost("another leader's entry took its place"))
        self._since_snapshot = (entries, size)
        if ready.committed:
            self.freshness.applied(self.applied_index)
            self.watches.applied(self.applied_index)

    # ---------------------------------------------------------- leases

    def _check_leases(self, now: float) -> None:
        """The leader's clock (``raftd.runtime.leases``): started once its applied state is
        current in its term, then every expired lease revoked through the log."""
        node, clock = self.node, self.leases
        if node.role is not Role.LEADER:
            if clock.leading:
                clock.stop()
            return
        if not clock.leading:
            if node.log.term_at(self.applied_index) == node.current_term:
                clock.lead(now, self.kv.leases)
            return
        for lease in clock.expired(now):
            self._expire_lease(lease)

    def _expire_lease(self, lease: int) -> None:
        """Propose the revocation of an expired lease: a trace of its own, from this
        decision to every member's apply (the entry carries its context)."""
        span = self.spans.tracer.start_span(
            "lease.expire",
            context=otel_context.Context(),  # a root: the sampler decides at the edge
            attributes={
                "raftd.lease": lease,
                "raftd.node": self.config.name,
                EDGE_ATTRIBUTE: EDGE_LEASE,
            },
        )
        log.info("lease expired; revoking it", lease=lease)
        self.metrics.lease_expired()

        def revoked(reply: ClientReply) -> None:
            if isinstance(reply, WriteReply):
                if span.is_recording():
                    span.set_attribute("raft.index", reply.index)
                    span.set_attribute("raftd.keys_deleted", reply.count)
            else:
                self.leases.retry(lease)
                if span.is_recording():
                    span.set_attribute("raftd.error_code", getattr(reply, "code", ""))
            span.end()

        request = kv.Request("", 0, kv.LeaseRevoke(lease))
        recorded = span if span.is_recording() else None
        self._propose(Write(request, recorded, ReplyBox(revoked)))

    def _lease_applied(self, command: kv.Command, result: kv.Result) -> None:
        match command:
            case kv.LeaseGrant(ttl_s) if result.error is None:
                # A retried grant answered from the session renews the lease it made.
                self.leases.granted(result.revision, ttl_s, trio.current_time())
            case kv.LeaseRevoke(lease):
                self.leases.ended(lease)
            case _:
                pass

    def _keep_alive(self, lease: int) -> ClientReply:
        if self.node.role is not Role.LEADER:
            return self._not_leader()
        if not self.leases.leading:
            return ErrorReply(
                ErrorCode.NO_LEADER, "the new leader is catching up; try again shortly", True
            )
        ttl_s = self.kv.lease_ttl(lease)
        if ttl_s is None or not self.leases.renew(lease, ttl_s, trio.current_time()):
            return ErrorReply(
                ErrorCode.NOT_FOUND, f"lease {lease} does not exist (expired or revoked)", True
            )
        return LeaseReply(lease, ttl_s)

    def _configuration_committed(self, entry: Entry) -> None:
        waiting = self._member_changes.pop(entry.index, None)
        if waiting is not None:
            term, box, name, member_id = waiting
            if term == entry.term:
                box.set(MemberChangeReply(name, member_id, entry.index))
            else:
                box.set(_leadership_lost("another leader's entry took its place"))
        members = Membership.decode(entry.data).members
        if self.node.id in members:
            self._was_member = True
        elif self._was_member and self._removed_at is None:
            self._removed_at = entry.index
            log.warning(
                "this member was removed from the cluster; it stops serving",
                index=entry.index,
            )
            if self._helpers is not None:
                self._helpers.start_soon(self._stop_removed)

    async def _stop_removed(self) -> None:
        assert self._removed_at is not None
        data_dir, index = self.config.data_dir, self._removed_at
        await trio.to_thread.run_sync(identity.record_removed, OsFileSystem(), data_dir, index)
        await trio.sleep(REMOVED_GRACE_S)
        raise MemberRemoved(
            f"{self.config.name} was removed from the cluster (configuration at index "
            f"{self._removed_at}); it stopped serving"
        )

    # ------------------------------------------------------- snapshots

    def backup_capture(self) -> tuple[SnapshotMeta, kvsnapshot.Capture]:
        """The applied state as it is now, for a backup: call it inside the driver's turn
        (a read's reply callback), where nothing is half-applied."""
        index = self.applied_index
        term = self.node.log.term_at(index) or 0
        return self._snapshot_meta(index, term), self.kv.capture()

    def _snapshot_meta(self, index: int, term: int) -> SnapshotMeta:
        """A snapshot at ``index`` carries the configuration in force there."""
        membership = self.node.membership_at(index)
        return SnapshotMeta(index, term, membership.voters, membership.data)

    async def _install(self, snapshot: Snapshot) -> None:
        """A leader's snapshot replaces the state machine (before this Ready's committed
        entries, which follow it). Decoding a large one takes a while: off the loop."""
        started = time.perf_counter()
        try:
            restored = await trio.to_thread.run_sync(type(self.kv).restore, snapshot.data)
        except kvsnapshot.SnapshotFormatError as exc:
            # The core has already taken it; a member that cannot read what it agreed to
            # hold must stop rather than serve a state it does not have.
            raise StorageError(f"the leader's snapshot at {snapshot.meta.index}: {exc}") from exc
        self.kv = restored
        self.kv.changes = []
        self.watches.reset(snapshot.meta.index)
        self.applied_index = snapshot.meta.index
        self._since_snapshot = (0, 0)
        self.freshness.applied(self.applied_index)
        took = time.perf_counter() - started
        self.spans.installed(took)
        self.metrics.snapshot("installed", took, len(snapshot.data))
        log.info("installed a snapshot from the leader", index=snapshot.meta.index)

    def _maybe_snapshot(self) -> None:
        config = self.config
        entries, size = self._since_snapshot
        due = (config.snapshot_entries and entries >= config.snapshot_entries) or (
            config.snapshot_bytes and size >= config.snapshot_bytes
        )
        if not due or self._snapshotting or self._helpers is None:
            return
        index = self.applied_index
        term = self.node.log.term_at(index)
        if term is None:  # cannot happen: what is applied is in the log
            return
        meta = self._snapshot_meta(index, term)
        self._snapshotting = True
        self._since_snapshot = (0, 0)
        self._helpers.start_soon(self._take_snapshot, meta, self.kv.capture())

    async def _take_snapshot(self, meta: SnapshotMeta, capture: kvsnapshot.Capture) -> None:
        """Encode and save off the loop; the loop then hands it to the core (``_compact``)."""
        started = time.perf_counter()
        try:
            data = await trio.to_thread.run_sync(kvsnapshot.encode, capture)
            snapshot = Snapshot(meta, data)
            await trio.to_thread.run_sync(self.storage.save_snapshot, snapshot)
        except StorageError as exc:
            log.warning("could not save a snapshot; the log is not compacted", error=str(exc))
            self._snapshotting = False
            return
        self.metrics.snapshot("taken", time.perf_counter() - started, len(data))
        self._snapshot_ready = snapshot
        with contextlib.suppress(trio.WouldBlock):
            self.inbox_send.send_nowait(WAKE)

    def _compact(self, snapshot: Snapshot) -> None:
        try:
            upto = self.node.compact(snapshot, self.config.snapshot_keep_entries)
        except ValueError as exc:
            # A leader's snapshot was installed while ours was being written: it is newer.
            log.info("a snapshot was overtaken before it could compact the log", why=str(exc))
            self._snapshotting = False
            return
        log.info("snapshot taken", index=snapshot.meta.index, log_from=upto + 1)
        if self._helpers is not None:
            self._helpers.start_soon(self._compact_storage, upto)

    async def _compact_storage(self, upto: int) -> None:
        try:
            # Off the loop: it waits for a sync in progress, then deletes files.
            await trio.to_thread.run_sync(self.storage.compact, upto)
        except StorageError as exc:
            log.error("could not compact the log", error=str(exc))
        finally:
            self._snapshotting = False

    def _serve_reads(self, ready: Ready) -> None:
        for state in ready.read_states:
            read = self._reads.pop(state.context, None)
            if read is not None:
                self._reads_ready.append((state.index, read))
        still_waiting = []
        for index, read in self._reads_ready:
            if index <= self.applied_index:
                read.box.set(self._read_reply(read.key, read.query))
            else:
                still_waiting.append((index, read))
        self._reads_ready = still_waiting

    def _observe(self, events: tuple[ev.Event, ...]) -> None:
        node = self.node
        if self.roster.former and node.membership_committed and not node.departing:
            self.roster.settle()  # no one talks to the members removed any more
        if self.node.role is not self._role or node_fields.get("term") != self.node.current_term:
            self._role = self.node.role
            node_fields.update(role=self._role.value, term=self.node.current_term)
        for event in events:
            match event:
                case ev.BecameLeader():
                    self.metrics.leader_changed()
                    log.info("became leader", term=event.term, votes=self._names(event.votes))
                case ev.SteppedDown():
                    log.info("stepped down", term=event.term, reason=event.reason)
                    self._fail_writes("this node stopped being the leader")
                case ev.BecameFollower(leader_id=leader) if leader is not None:
                    self.metrics.leader_changed()
                    log.info("following", term=event.term, leader=self._name(leader))
                    if self._handovers:
                        self.metrics.leader_transfer("completed")
                        self._handover_ended(leader, event.term)
                case ev.MembershipChanged():
                    self.roster.update(self.node.membership)
                    learner = self.node.id in event.learners
                    self.metrics.membership(len(event.voters), len(event.learners), learner)
                    log.info(
                        "configuration changed",
                        index=event.index,
                        voters=self._names(event.voters),
                        learners=self._names(event.learners),
                    )
                case ev.LeaderTransferStarted():
                    self.metrics.leader_transfer("started")
                    log.info("handing leadership over", target=self._name(event.target))
                case ev.TimeoutNowSent():
                    target = self._name(event.target)
                    log.info("told the caught-up target to campaign", target=target)
                case ev.LeaderTransferAborted():
                    self.metrics.leader_transfer("aborted")
                    log.warning(
                        "leadership transfer aborted",
                        target=self._name(event.target),
                        reason=event.reason,
                    )
                    self._handover_ended(None, event.term, (event.target, event.reason))
                case ev.ElectionStarted():
                    self.metrics.election_started(pre_vote=event.pre_vote)
                    log.info(
                        "election started",
                        term=event.term,
                        pre_vote=event.pre_vote,
                        reason=event.reason,
                    )
                case ev.BecameCandidate():
                    self.metrics.election_started(pre_vote=False)
                case ev.ReadsAborted():
                    for context in event.contexts:
                        read = self._reads.pop(context, None)
                        if read is not None:
                            read.box.set(_leadership_lost("the read was not served"))
                case ev.LogTruncated():
                    log.warning("log truncated", from_index=event.from_index, term=event.term)
                case ev.CommittedEntryConflict():
                    log.error(
                        "refused an append that conflicts with a committed entry: a member "
                        "lost acknowledged data or the cluster is inconsistent",
                        leader=self._name(event.src),
                        index=event.index,
                        local_term=event.local_term,
                        leader_term=event.leader_term,
                        commit_index=event.commit_index,
                    )
                case _:
                    pass

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            box = deadlines.popleft()[1]
            if box.reply is None:  # most were answered long ago: no error built for them
                box.set(timed_out(self.config.request_timeout_s))

    def _fail_writes(self, why: str) -> None:
        for _, box, _ in self._writes.values():
            box.set(_leadership_lost(why))
        self._writes.clear()
        for _, box, _, _ in self._member_changes.values():
            box.set(_leadership_lost(why))
        self._member_changes.clear()

    def _name(self, node_id: int | None) -> str | None:
        return None if node_id is None else self.names.get(node_id, str(node_id))

    def _names(self, node_ids: tuple[int, ...]) -> list[str | None]:
        return [self._name(i) for i in node_ids]

    def fail_everything(self, why: str) -> None:
        """Shutting down: every waiting client gets an answer instead of a hang."""
        self._fail_writes(why)
        reads = [*self._reads.values(), *(read for _, read in self._reads_ready)]
        for read in reads:
            read.box.set(_leadership_lost(why))
        self._reads.clear()
        self._reads_ready.clear()


def _vouch(msg: Message, lag: float | None, applied_index: int) -> float | None:
    """The lag a leader's message may carry: only when its commit index covers every write
    this leader has acknowledged so far (acknowledging happens as entries are applied). A
    message built earlier in the turn, before its commit index moved on and the writes up
    to there were answered, would otherwise vouch for a point after those answers."""
    match msg:
        case Heartbeat(commit_index=commit) | AppendEntries(leader_commit=commit):
            return lag if commit >= applied_index else None
        case _:
            return None


def _outcome(result: kv.Result) -> str:
    if result.error is not None:
        return "error"
    return "ok" if result.ok else "unchanged"


def _write_reply(command: kv.Command, result: kv.Result, index: int) -> ClientReply:
    if result.error == kv.ERROR_LEASE_NOT_FOUND:
        lease = getattr(command, "lease", 0)
        why = f"lease {lease} does not exist (expired or revoked); nothing was written"
        return ErrorReply(ErrorCode.NOT_FOUND, why, True)
    if result.error is not None:
        return ErrorReply(ErrorCode.SESSION, result.error, True)
    # The revision the request took effect at, which for a retry answered from its
    # session is the first attempt's entry, not this one.
    revision = result.revision or index
    if isinstance(command, kv.LeaseGrant):
        return LeaseReply(revision, command.ttl_s)
    return WriteReply(result.ok, result.value, result.found, revision, result.count)


def timed_out(timeout_s: float) -> ErrorReply:
    return ErrorReply(
        ErrorCode.TIMEOUT,
        f"no answer within {timeout_s} s; the write may or may not have happened",
        False,
    )


def _leadership_lost(why: str) -> ErrorReply:
    return ErrorReply(
        ErrorCode.LEADERSHIP_LOST,
        f"leadership changed before the answer was known ({why}); the write may or may not "
        "have happened",
        False,
    )
