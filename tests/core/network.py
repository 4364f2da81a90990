"""A small in-memory cluster for scenario tests that read like protocol traces.

Messages are delivered instantly and in order by ``stabilize``; time passes only through
``tick``. Links can be cut in one or both directions, nodes crashed (losing everything not
synced) and restarted from their durable state. Each node's "state machine" is the list of
applied entries, rebuilt on restart from its snapshot (``snapshot`` takes one) and by
re-applying the committed log after it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import TypeVar

from raftd.core import (
    AppendEntries,
    AppendEntriesResponse,
    Config,
    Entry,
    EntryKind,
    Message,
    NodeId,
    RaftNode,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from raftd.core.events import Event
from raftd.core.types import Snapshot, SnapshotMeta
from raftd.storage import MemoryStorage, stage_ready

E = TypeVar("E")


class Network:
    def __init__(
        self,
        size: int = 3,
        *,
        spares: int = 0,
        seed: int = 0,
        pre_vote: bool = True,
        check_quorum: bool = True,
        election_timeout_ticks: int = 10,
        heartbeat_interval_ticks: int = 2,
        max_entries_per_append: int = 256,
        max_bytes_per_append: int = 1 << 20,
    ) -> None:
        # ``spares`` more nodes run from the start without a configuration: members-to-be,
        # waiting to be added (they never campaign until a configuration names them).
        self.voters: tuple[NodeId, ...] = tuple(range(1, size + 1))
        self.ids: tuple[NodeId, ...] = tuple(range(1, size + spares + 1))
        self._seed = seed
        self._restarts = 0
        self._config_args = {
            "pre_vote": pre_vote,
            "check_quorum": check_quorum,
            "election_timeout_ticks": election_timeout_ticks,
            "heartbeat_interval_ticks": heartbeat_interval_ticks,
            "max_entries_per_append": max_entries_per_append,
            "max_bytes_per_append": max_bytes_per_append,
        }
        self.storages = {i: MemoryStorage() for i in self.ids}
        self.nodes: dict[NodeId, RaftNode] = {}
        self.applied: dict[NodeId, list[Entry]] = {}
        self.events: dict[NodeId, list[Event]] = {i: [] for i in self.ids}
        self.cut_links: set[tuple[NodeId, NodeId]] = set()
        self.in_flight: deque[Message] = deque()
        self.delivered: list[Message] = []
        # Every Ready each node produced, in order (kept across restarts).
        self.readies: dict[NodeId, list[Ready]] = {i: [] for i in self.ids}
        # Called with (node, ready, storage) once a Ready is durable and before its
        # messages go out: the place to check "persist before send".
        self.ready_observers: list[Callable[[NodeId, Ready, MemoryStorage], None]] = []
        for i in self.ids:
            self._boot(i)

    # ----------------------------------------------------------- membership

    def config(self, node_id: NodeId) -> Config:
        voters = self.voters if node_id in self.voters else ()
        return Config(node_id=node_id, voters=voters, **self._config_args)  # type: ignore[arg-type]

    def _boot(self, node_id: NodeId) -> None:
        self._restarts += 1
        rng = random.Random(self._seed * 7919 + node_id * 104729 + self._restarts)
        durable = self.storages[node_id].load()
        self.nodes[node_id] = RaftNode(self.config(node_id), rng, durable)
        self.applied[node_id] = [] if durable.snapshot is None else decode(durable.snapshot.data)

    def crash(self, node_id: NodeId) -> None:
        """Stop a node abruptly: staged writes are lost, messages to it vanish."""
        self.storages[node_id].crash()
        del self.nodes[node_id]
        self.in_flight = deque(m for m in self.in_flight if m.dst != node_id)

    def restart(self, node_id: NodeId) -> None:
        assert node_id not in self.nodes, f"node {node_id} is running"
        self._boot(node_id)

    # ------------------------------------------------------------ the links

    def cut(self, a: NodeId, b: NodeId) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def cut_one_way(self, src: NodeId, dst: NodeId) -> None:
        self.cut_links.add((src, dst))

    def isolate(self, node_id: NodeId) -> None:
        for other in self.ids:
            if other != node_id:
                self.cut(node_id, other)

    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Cut every link between nodes of different groups (links inside a group stay)."""
        sets = [set(g) for g in groups]
        for i, group in enumerate(sets):
            for other in sets[i + 1 :]:
                for a in group:
                    for b in other:
                        self.cut(a, b)

    def heal(self) -> None:
        self.cut_links.clear()

    # --------------------------------------------------------------- driving

    def process(self, node_id: NodeId) -> None:
        """Handle every pending Ready of one node: persist, send, apply."""
        node = self.nodes[node_id]
        storage = self.storages[node_id]
        while node.has_ready():
            ready = node.ready()
            stage_ready(storage, ready)
            storage.sync()
            self.readies[node_id].append(ready)
            for observe in self.ready_observers:
                observe(node_id, ready, storage)
            self.in_flight.extend(ready.messages)
            if ready.snapshot is not None:
                self.applied[node_id] = decode(ready.snapshot.data)
            self.applied[node_id].extend(ready.committed)
            self.events[node_id].extend(ready.events)
            node.advance(ready)

    def stabilize(self, max_messages: int = 100_000) -> None:
        """Deliver messages until nothing more happens."""
        for node_id in list(self.nodes):
            self.process(node_id)
        delivered = 0
        while self.in_flight:
            msg = self.in_flight.popleft()
            delivered += 1
            assert delivered <= max_messages, "the cluster never went quiet"
            if msg.dst not in self.nodes or (msg.src, msg.dst) in self.cut_links:
                continue
            self.delivered.append(msg)
            self.nodes[msg.dst].step(msg)
            self.process(msg.dst)

    def tick(self, ticks: int = 1) -> None:
        for _ in range(ticks):
            for node_id in list(self.nodes):
                self.nodes[node_id].tick()
            self.stabilize()

    def deliver(self, where: Callable[[Message], bool] | None = None) -> list[Message]:
        """Deliver once the messages in flight now (those ``where`` accepts; the rest stay
        queued). Replies they cause are queued, not delivered: one round trip at a time."""
        for node_id in list(self.nodes):
            self.process(node_id)
        batch = list(self.in_flight)
        self.in_flight = deque(m for m in batch if where is not None and not where(m))
        delivered: list[Message] = []
        for msg in batch:
            if where is not None and not where(msg):
                continue
            if msg.dst not in self.nodes or (msg.src, msg.dst) in self.cut_links:
                continue
            self.delivered.append(msg)
            delivered.append(msg)
            self.nodes[msg.dst].step(msg)
            self.process(msg.dst)
        return delivered

    def run_until(self, done: Callable[[], bool], max_ticks: int = 500) -> None:
        """Tick, then deliver one round of messages at a time, stopping as soon as ``done()``
        holds (with every Ready so far handled), so a test can act at that exact point."""
        for _ in range(max_ticks):
            for node_id in list(self.nodes):
                self.nodes[node_id].tick()
                self.process(node_id)
            if done():
                return
            for _round in range(10_000):
                if not self.in_flight:
                    break
                self.deliver()
                if done():
                    return
            else:
                raise AssertionError("the cluster never went quiet")
        raise AssertionError(f"condition not reached after {max_ticks} ticks")

    def drop_in_flight(self) -> list[Message]:
        """Take every undelivered message out of the network (to replay or discard)."""
        taken = list(self.in_flight)
        self.in_flight.clear()
        return taken

    def send(self, messages: Iterable[Message]) -> None:
        """Put messages (say, ones taken earlier) back on the wire."""
        self.in_flight.extend(messages)

    def snapshot(self, node_id: NodeId, keep_entries: int = 0) -> Snapshot:
        """Save the node's state machine as of what it applied, and compact its log."""
        self.process(node_id)
        node = self.nodes[node_id]
        index = node.last_applied
        term = node.log.term_at(index)
        assert term is not None
        membership = node.membership_at(index)
        meta = SnapshotMeta(index, term, membership.voters, membership.data)
        snapshot = Snapshot(meta, encode(self.applied[node_id]))
        storage = self.storages[node_id]
        storage.save_snapshot(snapshot)
        storage.compact(node.compact(snapshot, keep_entries))
        self.process(node_id)
        return snapshot

    # ---------------------------------------------------------------- stories

    def elect(self, node_id: NodeId) -> RaftNode:
        """Make ``node_id`` campaign now and deliver everything; it must win."""
        self.nodes[node_id].campaign()
        self.stabilize()
        node = self.nodes[node_id]
        assert node.role is Role.LEADER, f"node {node_id} did not win: {node.role}"
        return node

    def leaders(self) -> list[NodeId]:
        return [i for i, n in self.nodes.items() if n.role is Role.LEADER]

    def leader(self) -> NodeId:
        """The one leader with the highest term among running nodes."""
        leaders = self.leaders()
        assert leaders, "no leader"
        top = max(self.nodes[i].current_term for i in leaders)
        current = [i for i in leaders if self.nodes[i].current_term == top]
        assert len(current) == 1, f"two leaders in term {top}: {current}"
        return current[0]

    def wait_for_leader(
        self, among: Iterable[NodeId] | None = None, max_ticks: int = 500
    ) -> NodeId:
        """Tick until exactly one node of ``among`` leads in the highest term there."""
        group = set(among) if among is not None else set(self.nodes)
        for _ in range(max_ticks):
            leaders = [i for i in group if i in self.nodes and self.nodes[i].role is Role.LEADER]
            top = max(self.nodes[i].current_term for i in group if i in self.nodes)
            current = [i for i in leaders if self.nodes[i].current_term == top]
            if len(current) == 1:
                return current[0]
            self.tick()
        raise AssertionError(f"no leader among {sorted(group)} after {max_ticks} ticks")

    def propose(self, node_id: NodeId, data: bytes) -> tuple[int, int]:
        index_term = self.nodes[node_id].propose(data)
        self.stabilize()
        return index_term

    def commands(self, node_id: NodeId) -> list[bytes]:
        """The client commands this node has applied, in order (no-ops left out)."""
        return [e.data for e in self.applied[node_id] if e.kind is EntryKind.NORMAL]

    def events_of(self, node_id: NodeId, kind: type[E]) -> list[E]:
        return [e for e in self.events[node_id] if isinstance(e, kind)]

    def committed_on(self, data: bytes) -> dict[NodeId, int]:
        """Running nodes that applied the command ``data``, with the index it was applied at."""
        found: dict[NodeId, int] = {}
        for node_id in self.nodes:
            for entry in self.applied[node_id]:
                if entry.kind is EntryKind.NORMAL and entry.data == data:
                    found[node_id] = entry.index
        return found


# ------------------------------------------------------------------ snapshots


def encode(applied: list[Entry]) -> bytes:
    """The test state machine as snapshot data: every applied entry, one per line."""
    return b"\n".join(f"{e.index} {e.term} {int(e.kind)} {e.data.hex()}".encode() for e in applied)


def decode(data: bytes) -> list[Entry]:
    entries = []
    for line in data.split(b"\n") if data else []:
        index, term, kind, hex_data = line.decode().split(" ")
        entries.append(Entry(int(index), int(term), bytes.fromhex(hex_data), EntryKind(int(kind))))
    return entries


# ------------------------------------------------------------------ checks


def assert_committed(net: Network, data: bytes, count: int) -> int:
    """Exactly ``count`` running nodes applied ``data``, all at the same index; returns it."""
    found = net.committed_on(data)
    assert len(found) == count, f"{data!r} applied on {sorted(found)}, expected {count} nodes"
    indexes = set(found.values())
    assert len(indexes) == 1, f"{data!r} applied at different indexes: {found}"
    return indexes.pop()


def assert_not_committed(net: Network, data: bytes) -> None:
    found = net.committed_on(data)
    assert not found, f"{data!r} was applied on {sorted(found)}"


def assert_applied_agree(net: Network) -> None:
    """State machine safety: every node applied a gapless prefix of one common sequence."""
    longest: list[Entry] = []
    for node_id, applied in net.applied.items():
        indexes = [e.index for e in applied]
        assert indexes == list(range(1, len(applied) + 1)), f"node {node_id} applied {indexes}"
        common = min(len(applied), len(longest))
        assert applied[:common] == longest[:common], f"node {node_id} diverges"
        if len(applied) > len(longest):
            longest = applied


def audit_persist_before_send(node_id: NodeId, ready: Ready, storage: MemoryStorage) -> None:
    """A ``ready_observers`` hook: no message may depend on state a crash could still lose.

    Called once a Ready is durable and before its messages leave. Every message is sent in the
    durable term (a pre-vote asks for the next one); a vote request or grant needs the durable
    vote; an acknowledgement or an AppendEntries only covers entries already synced.
    """
    durable = storage.load()
    term, voted_for = durable.hard_state.current_term, durable.hard_state.voted_for

    def synced(entry: Entry) -> bool:
        offset = entry.index - durable.snapshot_index - 1
        return 0 <= offset < len(durable.entries) and durable.entries[offset] == entry

    for msg in ready.messages:
        if isinstance(msg, RequestVote) and msg.pre_vote:
            assert msg.term == term + 1, f"node {node_id}: {msg} at durable term {term}"
            continue
        if isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.vote_granted:
            continue  # echoes the term the pre-candidate would use; changes nothing here
        assert msg.term == term, f"node {node_id} sends {msg} but its durable term is {term}"
        if isinstance(msg, RequestVote):
            assert voted_for == node_id, f"node {node_id} campaigns without a durable self-vote"
        elif isinstance(msg, RequestVoteResponse) and msg.vote_granted:
            assert voted_for == msg.dst, f"node {node_id} grants {msg.dst}, durable {voted_for}"
        elif isinstance(msg, AppendEntriesResponse) and msg.success:
            assert msg.match_index <= storage.last_index, f"node {node_id} acks unsynced entries"
        elif isinstance(msg, AppendEntries) and msg.entries:
            assert synced(msg.entries[-1]), f"leader {node_id} sends unsynced {msg.entries[-1]}"
