"""The deterministic simulator: one seed drives a whole cluster's life, faults included.

Everything that could vary between runs (fault rates, timeouts, delays, which message is
lost, when a node crashes) is drawn from ``random.Random(seed)``, and time is a counter,
so a seed replays exactly. A run has two phases:

1. safety: faults at the seed's rates, client proposals, and every safety invariant checked
   after every event (see checker.py);
2. liveness: the network heals, crashed nodes restart, faults stop; within a bounded number of
   ticks one leader must emerge, a fresh command must commit, and every node must converge
   to the same log and the same applied state, holding every command a leader acknowledged.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from raftd.core import (
    Config,
    Entry,
    EntryKind,
    LeaderTransferring,
    MembershipError,
    Message,
    NodeId,
    RaftNode,
    Ready,
    Role,
)
from raftd.core.events import (
    BecameLeader,
    CommitAdvanced,
    CommittedEntryConflict,
    Event,
    VoteGranted,
)
from raftd.core.membership import Membership
from raftd.core.types import Snapshot, SnapshotMeta
from raftd.storage import MemoryStorage, SnapshotStorage, stage_ready
from raftd.storage.pagecache import PageCacheStorage
from tests.sim.checker import SafetyChecker, Violation
from tests.sim.compaction import Compaction, SnapshotRegistry
from tests.sim.durability import DurableLogs
from tests.sim.faults import TICK_UNITS, FaultPlan
from tests.sim.sizes import FrameCheck, ValueSizes

SimStorage = MemoryStorage | PageCacheStorage
NodeFactory = Callable[[Config, random.Random, SimStorage], RaftNode]
StorageFactory = Callable[[], SimStorage]


def _swarm_storage(rng: random.Random) -> StorageFactory:
    if rng.random() < 0.5:
        return MemoryStorage
    return lambda: PageCacheStorage(random.Random(rng.getrandbits(64)))


def _label(data: bytes) -> str:
    """A command as the trace shows it: its name, and the size of any padding."""
    name, _, padding = data.partition(b":")
    return f"{name.decode()}+{len(padding)}B" if padding else name.decode()


def default_node(config: Config, rng: random.Random, storage: SimStorage) -> RaftNode:
    return RaftNode(config, rng, storage.load())


@dataclass
class RunResult:
    seed: int
    plan: FaultPlan
    violation: str | None
    digest: str
    ticks: int
    events: int
    messages: int
    proposals: int
    committed: int
    crashes: int
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.violation is None


# Kinds of scheduled work, ordered for ties at the same instant.
_DELIVER, _NODE_TICK, _WORLD, _RESTART, _SYNCED = 0, 1, 2, 3, 4


class Simulation:
    def __init__(
        self,
        seed: int,
        plan: FaultPlan | None = None,
        *,
        node_factory: NodeFactory = default_node,
        storage_factory: StorageFactory | None = None,
        value_sizes: ValueSizes | None = None,
        compaction: Compaction | None = None,
        trace: Callable[[str], None] | None = None,
        keep_lines: bool = False,
    ) -> None:
        """``storage_factory`` None lets the seed choose: half the seeds keep their logs in
        a WAL on the page-cache disk, whose crashes lose or tear unsynced pages."""
        self.seed = seed
        self.rng = random.Random(seed)
        self.plan = plan or FaultPlan.draw(self.rng)
        self._node_factory = node_factory
        self._trace = trace
        self._keep_lines = keep_lines
        self._lines: list[str] = []
        self._digest = hashlib.sha256()
        self.ids: tuple[NodeId, ...] = tuple(range(1, self.plan.nodes + 1))
        # Membership changes: most seeds add learners, promote them, and remove voters now
        # and then, from a generator of their own; two spare nodes run from the start with
        # no configuration, waiting to be added. Ids are never reused once removed.
        self._member_rng = random.Random(seed * 6_151 + 9)
        self.member_rate = (
            0.0 if self._member_rng.random() < 0.4 else self._member_rng.uniform(0.005, 0.04)
        )
        self.first_voters = self.ids
        if self.member_rate:
            self.ids += (self.plan.nodes + 1, self.plan.nodes + 2)
        self._retired: set[NodeId] = set()
        self._committed_config: tuple[int, Membership] = (0, Membership(self.first_voters))
        self._decommissioned: set[NodeId] = set()
        self._final_members: list[NodeId] = list(self.ids)
        # Side generators, so sizes and storage do not change the faults a seed draws.
        self.sizes = value_sizes or ValueSizes.draw(seed)
        self.compaction = compaction or Compaction.draw(seed)
        self.snapshots = SnapshotRegistry()
        self._size_rng = random.Random(seed * 31 + 7)
        # Leadership transfers: most seeds ask leaders to hand over now and then (to a
        # random member, running or not), from a generator of their own.
        self._transfer_rng = random.Random(seed * 7_919 + 5)
        self.transfer_rate = (
            0.0 if self._transfer_rng.random() < 0.4 else self._transfer_rng.uniform(0.002, 0.03)
        )
        # A leader's fsync off its loop (the runtime's background sync): most seeds let a
        # leader stage its entries, go on, and learn they are durable later, as the driver
        # does; a crash meanwhile loses them. From a generator of its own.
        self._sync_rng = random.Random(seed * 2_749 + 11)
        self.later_sync_share = 0.0 if self._sync_rng.random() < 0.25 else 0.8
        self.frames = FrameCheck()
        if storage_factory is None:
            storage_factory = _swarm_storage(random.Random(seed * 131 + 3))
        self.storages = {i: storage_factory() for i in self.ids}
        self.nodes: dict[NodeId, RaftNode] = {}
        self.checker = SafetyChecker()
        self.durable = DurableLogs()
        self.now = 0
        self._seq = 0
        self._queue: list[tuple[int, int, int, object]] = []
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self._crash_in_ready: dict[NodeId, bool] = {}  # node -> crash before its fsync?
        self._down: set[NodeId] = set()
        self.applied: dict[NodeId, list[Entry]] = {i: [] for i in self.ids}
        self.acknowledged: set[bytes] = set()
        # (proposer, index) -> (command, term): the proposer acknowledges the command when it
        # applies that very entry; another entry at that index means the command was lost.
        self._pending: dict[tuple[NodeId, int], tuple[bytes, int]] = {}
        self._next_command = 0
        self._next_read = 0
        self._read_floor: dict[bytes, int] = {}
        self._highest_acked_index = 0
        self.liveness = False
        self._link_last_delivery: dict[tuple[NodeId, NodeId], int] = {}
        self._final_command: bytes | None = None
        self._final_leader: tuple[NodeId, int] = (0, 0)
        self.counts = {
            "events": 0,
            "messages": 0,
            "proposals": 0,
            "crashes": 0,
            "transfers": 0,
            "membership_changes": 0,
        }
        for i in self.ids:
            self._start_node(i)
        self._schedule(0, _WORLD, None)

    # ------------------------------------------------------------ scheduling

    def _schedule(self, at: int, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, kind, self._seq, payload))

    def _start_node(self, node_id: NodeId) -> None:
        config = Config(
            node_id=node_id,
            voters=self.first_voters if node_id in self.first_voters else (),
            election_timeout_ticks=self.plan.election_timeout_ticks,
            heartbeat_interval_ticks=self.plan.heartbeat_interval_ticks,
            pre_vote=self.plan.pre_vote,
            check_quorum=self.plan.check_quorum,
            max_entries_per_append=self.plan.max_entries_per_append,
            max_inflight_appends=self.plan.max_inflight_appends,
        )
        rng = random.Random(self.rng.getrandbits(64))
        self.nodes[node_id] = self._node_factory(config, rng, self.storages[node_id])
        self.durable.started(self.nodes[node_id])
        self._down.discard(node_id)
        self.applied[node_id] = []
        self.checker.node_restarted(node_id)
        snapshot = self.nodes[node_id].snapshot
        if snapshot is not None:
            self._restore(node_id, snapshot)
        # Each node's clock runs at its own phase so ticks do not line up exactly.
        first_tick = self.now + self.rng.randrange(1, TICK_UNITS + 1)
        self._schedule(first_tick, _NODE_TICK, (node_id, self.nodes[node_id]))

    # ---------------------------------------------------------------- output

    def _emit(self, node_id: NodeId | None, text: str) -> None:
        self.counts["events"] += 1
        if node_id is None:
            line = f"{self.now / TICK_UNITS:8.1f} --  {text}"
        else:
            node = self.nodes.get(node_id)
            if node is None:
                state = "down"
            else:
                state = f"{node.role.value:<13} t={node.current_term:<3} c={node.commit_index:<4}"
            line = f"{self.now / TICK_UNITS:8.1f} n{node_id}  {state} {text}"
        self._digest.update(line.encode())
        if self._trace is not None:
            self._trace(line)
        if self._keep_lines:
            self._lines.append(line)

    # -------------------------------------------------------------- the nodes

    def _drain(self, node_id: NodeId) -> None:
        """Handle every Ready of a node: persist, (maybe crash), send, apply, check."""
        node = self.nodes[node_id]
        storage = self.storages[node_id]
        while node.has_ready():
            ready = node.ready()
            crash_before_sync = self._crash_in_ready.pop(node_id, None)
            moment = self._buggify_moment(node, ready)
            # The same order as the runtime's driver: a leader may send before its fsync,
            # and committed entries are applied before this bundle's own are durable. A
            # crash planned for this bundle strikes either after that early send (where
            # sending first is risky) or before the messages left the outbox (a leader
            # that won, committed or appended and told no one: Figure 8's material).
            if (
                ready.send_before_persist
                and ready.entries
                and crash_before_sync is not False
                and self._sync_rng.random() < self.later_sync_share
            ):
                # A crash planned for this bundle (or a BUGGIFY moment) strikes while its
                # fsync runs, after the leader went on and maybe heard its followers.
                crash = bool(crash_before_sync) or moment is not None
                self._persist_later(node_id, ready, crash=crash)
                if crash:
                    return
                continue
            sent = False
            if ready.send_before_persist and (
                (crash_before_sync is None and moment is None) or self.rng.random() < 0.5
            ):
                self._send(ready)
                sent = True
            self._apply(node_id, ready)
            self._check_reads(node_id, ready)
            stage_ready(storage, ready)
            self.durable.staged(node_id, ready)
            self.checker.appended(node, ready.entries)
            if crash_before_sync:
                self._crash(node_id, "before fsync, mid-Ready")
                return
            storage.sync()
            self.durable.synced(node_id)
            if crash_before_sync is False:
                self._crash(node_id, "after fsync, before send")
                return
            if moment is not None:
                self._crash(node_id, f"after fsync, before send: {moment}")
                return
            if not sent:
                self._send(ready)
            self._record_events(node, ready.events)
            node.advance(ready)
            self._maybe_compact(node_id)
        self.checker.node_state(node)

    def _persist_later(self, node_id: NodeId, ready: Ready, *, crash: bool) -> None:
        """A leader's bundle as the driver handles it: sent, applied, staged, advanced; its
        fsync finishes some time later (``_synced``), and a crash before then loses it.
        ``crash``: the crash planned for this bundle strikes while the fsync still runs,
        after the leader has gone on (and maybe heard its followers)."""
        node = self.nodes[node_id]
        self._send(ready)
        self._apply(node_id, ready)
        self._check_reads(node_id, ready)
        stage_ready(self.storages[node_id], ready)
        self.durable.staged(node_id, ready)
        self.checker.appended(node, ready.entries)
        self._record_events(node, ready.events)
        node.advance(ready, persisted=False)
        last = ready.entries[-1]
        at = self.now + self._sync_rng.randint(1, 3 * TICK_UNITS)
        self._schedule(at, _SYNCED, (node_id, node, last.index, last.term, crash))
        if not crash:
            self._maybe_compact(node_id)

    def _synced(
        self, node_id: NodeId, incarnation: RaftNode, index: int, term: int, crash: bool
    ) -> None:
        node = self.nodes.get(node_id)
        if node is not incarnation:
            return  # crashed meanwhile: what was only staged is gone with it
        if crash and not self.liveness:  # faults stop once the liveness phase begins
            self._crash(node_id, f"before its fsync up to {index} finished")
            return
        self.storages[node_id].sync()
        self.durable.synced(node_id)
        node.persisted(index, term)
        self._drain(node_id)

    def _maybe_compact(self, node_id: NodeId) -> None:
        """Snapshot a node's state machine and compact its log, at the seed's threshold.

        Only where the storage can hold snapshots (the page-cache WAL cannot yet)."""
        node = self.nodes[node_id]
        storage = self.storages[node_id]
        since = node.snapshot.meta.index if node.snapshot is not None else 0
        if not isinstance(storage, SnapshotStorage):
            return
        if node.has_ready() or not self.compaction.due(node.last_applied, since):
            return
        index = node.last_applied
        term = node.log.term_at(index)
        assert term is not None and len(self.applied[node_id]) == index
        token = self.snapshots.save(self.applied[node_id])
        membership = node.membership_at(index)
        snapshot = Snapshot(SnapshotMeta(index, term, membership.voters, membership.data), token)
        storage.save_snapshot(snapshot)
        self.durable.snapshot_saved(node_id, index)
        storage.compact(node.compact(snapshot, self.compaction.keep_entries))
        self._emit(node_id, f"snapshot at {index}, log from {node.log.first_index}")
        self._drain(node_id)

    def _restore(self, node_id: NodeId, snapshot: Snapshot) -> None:
        applied = self.snapshots.load(snapshot.data)
        if len(applied) != snapshot.meta.index:
            raise Violation(f"n{node_id}: snapshot at {snapshot.meta.index} holds {len(applied)}")
        self.applied[node_id] = applied
        self.checker.restored(node_id, applied)

    def _buggify_moment(self, node: RaftNode, ready: Ready) -> str | None:
        """Crash a leader at the moments where Raft's subtle rules matter (FoundationDB's
        BUGGIFY): just after winning, before anyone saw its no-op; just after its commit
        index moved, before followers heard; just after appending, leaving a divergent
        tail. Random crashes rarely land there."""
        rate = self.plan.buggify_rate
        if not rate or self.liveness or node.role is not Role.LEADER:
            return None
        for event in ready.events:
            if isinstance(event, BecameLeader | CommitAdvanced) and self.rng.random() < rate:
                return type(event).__name__
        if ready.entries and self.rng.random() < rate:
            return "new entries not yet replicated"
        return None

    def _send(self, ready: Ready) -> None:
        plan = self.plan
        for msg in ready.messages:
            self.counts["messages"] += 1
            self.frames.check(msg)
            if not self.liveness and self.rng.random() < plan.drop_rate:
                continue
            copies = 2 if not self.liveness and self.rng.random() < plan.duplicate_rate else 1
            for _ in range(copies):
                at = self.now + self.rng.randint(plan.min_delay_units, plan.max_delay_units)
                if self.liveness:
                    # Once healed, links behave like TCP: in order, though still slow.
                    link = (msg.src, msg.dst)
                    at = max(at, self._link_last_delivery.get(link, 0))
                    self._link_last_delivery[link] = at
                self._schedule(at, _DELIVER, msg)

    def _apply(self, node_id: NodeId, ready: Ready) -> None:
        if ready.snapshot is not None:
            self._restore(node_id, ready.snapshot)
        for entry in ready.committed:
            self.checker.applied(node_id, entry)
            self.applied[node_id].append(entry)
            if entry.kind is EntryKind.CONFIG and entry.index > self._committed_config[0]:
                committed = Membership.decode(entry.data)
                self.checker.configuration_committed(
                    entry.index, self._committed_config[1], committed
                )
                self._committed_config = (entry.index, committed)
            pending = self._pending.pop((node_id, entry.index), None)
            if pending is None:
                continue
            data, term = pending
            if (entry.term, entry.data) == (term, data):
                self.acknowledged.add(data)
                self._highest_acked_index = max(self._highest_acked_index, entry.index)
                self._emit(node_id, f"client ack {_label(data)} at {entry.index}")
            else:
                self._emit(node_id, f"client lost {_label(data)}: index {entry.index} reused")

    def _record_events(self, node: RaftNode, events: tuple[Event, ...]) -> None:
        for event in events:
            match event:
                case VoteGranted(pre_vote=False):
                    self.checker.vote_granted(node.id, event.term, event.candidate)
                case BecameLeader():
                    self.checker.became_leader(node)
                case CommitAdvanced() if node.role is Role.LEADER:
                    self.durable.check_commit(node, event.new_commit_index)
                case CommittedEntryConflict():
                    # Leader completeness failed somewhere: with durable members it cannot.
                    raise Violation(f"node {node.id}: {event}")
            self._emit(node.id, repr(event))

    # ----------------------------------------------------- scripted control

    def run_for(self, ticks: int) -> None:
        """Advance the world by ``ticks`` (for scripted stories such as the demo)."""
        self._run_until(self.now + ticks * TICK_UNITS)

    def crash(self, node_id: NodeId) -> None:
        """Crash a node now; it stays down until ``restart``."""
        self._crash(node_id, "by request", restart_later=False)

    def restart(self, node_id: NodeId) -> None:
        self._restart(node_id)

    def leader_ids(self) -> list[NodeId]:
        return sorted(i for i, n in self.nodes.items() if n.role is Role.LEADER)

    def _crash(self, node_id: NodeId, how: str, *, restart_later: bool = True) -> None:
        self.counts["crashes"] += 1
        self.storages[node_id].crash()
        del self.nodes[node_id]
        # Its clients lose their connections: those outcomes stay unknown, never acked.
        for key in [k for k in self._pending if k[0] == node_id]:
            del self._pending[key]
        self._down.add(node_id)
        self._crash_in_ready.pop(node_id, None)
        self._emit(node_id, f"CRASH ({how})")
        if restart_later and not self.liveness:
            low, high = self.plan.restart_after_ticks
            at = self.now + self.rng.randint(low, high) * TICK_UNITS
            self._schedule(at, _RESTART, node_id)

    def _restart(self, node_id: NodeId) -> None:
        if node_id in self.nodes or node_id in self._decommissioned:
            return
        self._start_node(node_id)
        node = self.nodes[node_id]
        self._emit(node_id, f"RESTART from term {node.current_term}, log {node.log.last_index}")

    # ------------------------------------------------------------- the world

    def _world_tick(self) -> None:
        """Once per tick: maybe change the partition, crash a node, propose a command."""
        plan = self.plan
        rng = self.rng
        if not self.liveness:
            if rng.random() < plan.partition_rate:
                self._repartition()
            if self.nodes and rng.random() < plan.crash_rate * len(self.nodes):
                leaders = sorted(i for i, n in self.nodes.items() if n.role is Role.LEADER)
                if leaders and rng.random() < plan.leader_crash_share:
                    victim = rng.choice(leaders)
                else:
                    victim = rng.choice(sorted(self.nodes))
                if rng.random() < plan.crash_in_ready_share:
                    self._crash_in_ready[victim] = rng.random() < plan.unsynced_crash_share
                else:
                    self._crash(victim, "abrupt")
            if self._transfer_rng.random() < self.transfer_rate:
                self._transfer()
            if self._member_rng.random() < self.member_rate:
                self._change_membership()
        # In the liveness phase clients stop once the final command is out, so the logs
        # can settle.
        quiet = self.liveness and self._final_command is not None
        if rng.random() < plan.propose_rate and not quiet:
            self._propose()
        if rng.random() < plan.read_rate and not quiet:
            self._read()
        self._schedule(self.now + TICK_UNITS, _WORLD, None)

    def _repartition(self) -> None:
        rng = self.rng
        choice = rng.random()
        self.blocked = set()
        if choice < 0.25:
            self._emit(None, "HEAL")
            return
        if rng.random() < self.plan.one_way_share:
            src, dst = rng.sample(self.ids, 2)
            self.blocked.add((src, dst))
            self._emit(None, f"CUT one way n{src} -> n{dst}")
            return
        shuffled = list(self.ids)
        rng.shuffle(shuffled)
        split = rng.randint(1, len(shuffled) // 2)
        side_a, side_b = sorted(shuffled[:split]), sorted(shuffled[split:])
        for a in side_a:
            for b in side_b:
                self.blocked |= {(a, b), (b, a)}
        self._emit(None, f"PARTITION {side_a} | {side_b}")

    def _propose(self) -> None:
        leaders = [n for n in self.nodes.values() if n.role is Role.LEADER]
        if not leaders:
            return
        # Clients do not know who leads; they try one of the nodes that believes it does.
        node = self.rng.choice(leaders)
        self._next_command += 1
        data = f"c{self._next_command}".encode()
        padding = self.sizes.padding(self._size_rng)
        if padding:
            data += b":" + b"v" * padding
        self.checker.proposed.add(data)
        try:
            index, term = node.propose(data)
        except LeaderTransferring as exc:
            self._emit(node.id, f"propose {_label(data)} refused: handing over to n{exc.target}")
            return
        self._pending[(node.id, index)] = (data, term)
        self.counts["proposals"] += 1
        self._emit(node.id, f"propose {_label(data)} at {index}")
        self._drain(node.id)

    def _transfer(self) -> None:
        leaders = sorted(i for i, n in self.nodes.items() if n.role is Role.LEADER)
        if not leaders:
            return
        node = self.nodes[self._transfer_rng.choice(leaders)]
        voters = [i for i in node.membership.voters if i != node.id]
        if not voters:
            return
        target = self._transfer_rng.choice(voters)
        node.transfer_leadership(target)
        self.counts["transfers"] += 1
        self._emit(node.id, f"transfer leadership to n{target}")
        self._drain(node.id)

    def _change_membership(self) -> None:
        """Ask a leader for one change: add a learner or a voter, promote a learner, or
        remove a learner or a voter (keeping at least one)."""
        rng = self._member_rng
        leaders = sorted(i for i, n in self.nodes.items() if n.role is Role.LEADER)
        if not leaders:
            return
        node = self.nodes[rng.choice(leaders)]
        current = node.membership
        voters, learners = set(current.voters), set(current.learners)
        fresh = [i for i in self.ids if i not in current.members and i not in self._retired]
        options = []
        if fresh:
            options += ["add_learner", "add_voter"]
        if learners:
            options += ["promote", "remove_learner"]
        if len(voters) > 1:
            options.append("remove_voter")
        if not options:
            return
        what = rng.choice(options)
        if what == "add_learner":
            learners.add(rng.choice(fresh))
        elif what == "add_voter":
            voters.add(rng.choice(fresh))
        elif what == "promote":
            member = rng.choice(sorted(learners))
            learners.discard(member)
            voters.add(member)
        else:
            pool = learners if what == "remove_learner" else voters
            member = rng.choice(sorted(pool))
            pool.discard(member)
            self._retired.add(member)
        wanted = Membership.of(voters, learners)
        try:
            index, _ = node.propose_membership(wanted)
        except (MembershipError, LeaderTransferring) as exc:
            self._emit(node.id, f"{what} refused: {exc}")
            return
        self.counts["membership_changes"] += 1
        self._emit(node.id, f"{what}: voters {wanted.voters} learners {wanted.learners} at {index}")
        self._drain(node.id)

    def _read(self) -> None:
        leaders = [n for n in self.nodes.values() if n.role is Role.LEADER]
        if not leaders:
            return
        node = self.rng.choice(leaders)
        self._next_read += 1
        context = f"r{self._next_read}".encode()
        # Linearizability: the read must see every write acknowledged before it began.
        self._read_floor[context] = self._highest_acked_index
        node.read_index(context)
        self._emit(node.id, f"read {context.decode()} (must see index {self._highest_acked_index})")
        self._drain(node.id)

    def _check_reads(self, node_id: NodeId, ready: Ready) -> None:
        for state in ready.read_states:
            floor = self._read_floor.pop(state.context)
            if state.index < floor:
                raise Violation(
                    f"stale read: n{node_id} would serve {state.context.decode()} at index "
                    f"{state.index}, but index {floor} was acknowledged before it began"
                )
            self._emit(node_id, f"read {state.context.decode()} served at index {state.index}")

    def _deliver(self, msg: Message) -> None:
        node = self.nodes.get(msg.dst)
        if node is None or (msg.src, msg.dst) in self.blocked:
            return
        node.step(msg)
        self._drain(msg.dst)

    def _node_tick(self, node_id: NodeId, incarnation: RaftNode) -> None:
        node = self.nodes.get(node_id)
        if node is not incarnation:
            # Crashed: this clock stops. (A restarted node runs its own clock; letting the
            # old one run on would tick it twice as fast.)
            return
        node.tick()
        self._drain(node_id)
        self._schedule(self.now + TICK_UNITS, _NODE_TICK, (node_id, node))

    def _run_until(self, end_units: int, done: Callable[[], bool] | None = None) -> bool:
        while self._queue and self._queue[0][0] <= end_units:
            at, kind, _, payload = heapq.heappop(self._queue)
            self.now = at
            if kind == _DELIVER:
                self._deliver(payload)  # type: ignore[arg-type]
            elif kind == _NODE_TICK:
                self._node_tick(*payload)  # type: ignore[misc]
            elif kind == _WORLD:
                self._world_tick()
                if done is not None and done():
                    return True
            elif kind == _RESTART:
                self._restart(payload)  # type: ignore[arg-type]
            else:
                self._synced(*payload)  # type: ignore[misc]
        self.now = end_units
        return False

    # ------------------------------------------------------------- liveness

    def _start_liveness(self) -> None:
        self.liveness = True
        self.blocked = set()
        self._crash_in_ready.clear()
        self._emit(None, "LIVENESS: heal the network, restart every node, stop faults")
        for node_id in sorted(self._down):
            self._restart(node_id)
        if self.member_rate:
            self._decommission()

    def _decommission(self) -> None:
        """Stop for good the nodes no configuration needs any more: those outside the
        newest committed one and every newer one in any log (an operator shuts a removed
        member down; one that missed its removal would campaign in a cluster that no longer
        answers it, and without pre-vote or check-quorum keep deposing its leaders)."""
        committed_index, committed = self._committed_config
        keep = set(committed.members)
        for node in self.nodes.values():
            start = max(committed_index + 1, node.log.first_index)
            for entry in node.log.slice(start, node.log.last_index + 1):
                if entry.kind is EntryKind.CONFIG:
                    keep |= set(Membership.decode(entry.data).members)
        for node_id in sorted(set(self.nodes) - keep):
            self._decommissioned.add(node_id)
            self._crash(node_id, "no longer a member: shut down", restart_later=False)

    def _liveness_bound_ticks(self) -> int:
        """Ticks allowed to converge: elections, plus pushing the backlog through the pipe.

        A follower that missed ``backlog`` entries needs about backlog / (entries per append
        x appends in flight) round trips, each at most twice the largest delay.
        """
        plan = self.plan
        backlog = max(n.log.last_index for n in self.nodes.values())
        per_round_trip = plan.max_entries_per_append * plan.max_inflight_appends
        round_trip_ticks = 2 * plan.max_delay_units / TICK_UNITS + 1
        catch_up = int(backlog / per_round_trip * round_trip_ticks * 2)
        return plan.liveness_ticks + catch_up

    def _converged(self) -> bool:
        leaders = [n for n in self.nodes.values() if n.role is Role.LEADER]
        if len(leaders) != 1:
            return False
        leader = leaders[0]
        # The members of the leader's configuration must agree; a member removed by a
        # change it never heard of may keep an old log, which nothing reads any more.
        self._final_members = [i for i in self.ids if i in leader.membership.members]
        if any(i not in self.nodes for i in self._final_members):
            return False
        nodes = [self.nodes[i] for i in self._final_members]
        if leader.transferee is not None:
            return False  # it takes no proposals until the transfer ends
        if self._final_command is not None and self._final_leader != (
            leader.id,
            leader.current_term,
        ):
            self._final_command = None  # its leader is gone: the command may be lost
        if self._final_command is None:
            self._final_leader = (leader.id, leader.current_term)
            self._next_command += 1
            self._final_command = f"c{self._next_command}-final".encode()
            self.checker.proposed.add(self._final_command)
            index, term = leader.propose(self._final_command)
            self.counts["proposals"] += 1
            self._pending[(leader.id, index)] = (self._final_command, term)
            self._emit(leader.id, f"propose {self._final_command.decode()} at {index}")
            self._drain(leader.id)
            return False
        if self._final_command not in self.acknowledged:
            return False
        last = leader.log.last_index
        return all(
            n.current_term == leader.current_term
            and n.log.last_index == last
            and n.log.last_term == leader.log.last_term
            and n.last_applied == last
            for n in nodes
        )

    def _final_checks(self) -> None:
        members = self._final_members
        reference = self.applied[members[0]]
        for node_id in members:
            if self.applied[node_id] != reference:
                raise Violation(f"n{node_id} applied a different sequence than n{members[0]}")
        commands = {e.data for e in reference if e.kind is EntryKind.NORMAL}
        lost = sorted(self.acknowledged - commands)
        if lost:
            raise Violation(f"acknowledged commands lost: {lost[:5]}")

    # ------------------------------------------------------------------- run

    def run(self) -> RunResult:
        compaction = self.compaction
        self._emit(
            None,
            f"SEED={self.seed} {self.plan.describe()} compact_every={compaction.every_entries} "
            f"compact_keep={compaction.keep_entries} transfer_rate={self.transfer_rate:.3f} "
            f"member_rate={self.member_rate:.3f}",
        )
        violation: str | None = None
        try:
            self._run_until(self.plan.safety_ticks * TICK_UNITS)
            self._start_liveness()
            bound = self._liveness_bound_ticks()
            if not self._run_until(self.now + bound * TICK_UNITS, self._converged):
                roles = {i: (n.role.value, n.current_term) for i, n in self.nodes.items()}
                raise Violation(
                    f"liveness: no convergence within {bound} ticks after healing; nodes: {roles}"
                )
            self._final_checks()
            last = self.nodes[self._final_members[0]].log.last_index
            self._emit(None, f"CONVERGED at index {last}")
        except (Violation, AssertionError) as exc:
            violation = f"{type(exc).__name__}: {exc}"
            self._emit(None, f"VIOLATION {violation}")
        return RunResult(
            seed=self.seed,
            plan=self.plan,
            violation=violation,
            digest=self._digest.hexdigest()[:16],
            ticks=self.now // TICK_UNITS,
            events=self.counts["events"],
            messages=self.counts["messages"],
            proposals=self.counts["proposals"],
            committed=len(self.acknowledged),
            crashes=self.counts["crashes"],
            lines=self._lines,
        )
