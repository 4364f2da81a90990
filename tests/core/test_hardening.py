"""Core failures found by running raftd as an operator would , each pinned.

- AppendEntries was bounded by entry count only, so large values made catch-up frames that
  the transport could not send;
- a follower whose recovery cut acknowledged entries was never backed off below its match
  index, so the leader stayed stuck on it;
- a leader conflicting with a committed entry tripped an ``assert`` (gone under ``-O``).
"""

from __future__ import annotations

import random

from raftd.core import AppendEntries, Config, DurableState, Entry, RaftNode
from raftd.core.events import CommittedEntryConflict
from raftd.core.node import ENTRY_OVERHEAD
from raftd.storage import MemoryStorage
from tests.core.network import Network


def _appends(net: Network) -> list[AppendEntries]:
    return [m for m in net.delivered if isinstance(m, AppendEntries)]


def test_a_catch_up_is_cut_into_appends_within_the_byte_bound() -> None:
    """A follower that missed sixty 3 kB writes catches up in appends of at most 10 kB of
    entries each; an entry larger than the bound still travels, alone."""
    bound = 10_000
    net = Network(3, max_bytes_per_append=bound)
    net.elect(1)
    net.isolate(3)
    for n in range(60):
        net.propose(1, bytes([n % 256]) * 3_000)
    net.propose(1, b"x" * (3 * bound))
    net.stabilize()
    net.delivered.clear()
    net.heal()
    net.run_until(lambda: net.nodes[3].log.last_index == net.nodes[1].log.last_index)
    net.stabilize()
    sizes = [sum(len(e.data) + ENTRY_OVERHEAD for e in m.entries) for m in _appends(net)]
    assert len(sizes) > 10
    for message in _appends(net):
        if len(message.entries) > 1:
            assert sum(len(e.data) + ENTRY_OVERHEAD for e in message.entries) <= bound
    assert any(len(m.entries) == 1 and len(m.entries[0].data) == 3 * bound for m in _appends(net))
    assert net.commands(3) == net.commands(1)


def test_the_leader_backs_off_below_the_match_index_of_a_follower_that_lost_entries() -> None:
    """Node 3 acknowledged ten entries, then came back holding five (its disk lost the rest).
    Its rejections land exactly at the match index the leader recorded; the leader must
    trust them and send the missing entries again instead of waiting for a new leader."""
    net = Network(3)
    leader = net.elect(1)
    for n in range(10):
        net.propose(1, b"w%d" % n)
    net.stabilize()
    acknowledged = leader.progress(3).match_index
    assert acknowledged == leader.log.last_index
    durable = net.storages[3].load()
    net.crash(3)
    net.storages[3] = MemoryStorage(
        DurableState(durable.hard_state, durable.entries[: len(durable.entries) - 6])
    )
    net.restart(3)
    net.propose(1, b"after")
    net.run_until(lambda: net.nodes[3].log.last_index == leader.log.last_index, max_ticks=60)
    net.stabilize()
    assert leader.role.value == "leader"
    assert net.commands(3)[-1] == b"after"


def test_a_leader_conflicting_with_a_committed_entry_is_refused_without_truncating() -> None:
    node = RaftNode(Config(1, (1, 2, 3)), random.Random(1))
    node.step(AppendEntries(1, 2, 1, 0, 0, tuple(Entry(i, 1) for i in (1, 2, 3)), 3))
    node.advance(node.ready())
    assert node.commit_index == 3

    node.step(AppendEntries(2, 3, 1, 1, 1, (Entry(2, 2, b"rogue"),), 0))
    ready = node.ready()
    node.advance(ready)
    assert CommittedEntryConflict(3, 2, 1, 2, 3) in ready.events
    assert ready.messages == ()
    assert [(e.index, e.term) for e in node.log.slice(1, 4)] == [(1, 1), (2, 1), (3, 1)]


def test_a_long_committed_backlog_is_handed_out_in_chunks() -> None:
    """A restarted member told that its whole replayed log is committed got every entry in
    one Ready (seconds of applying in one driver turn at 100k entries)."""
    entries = tuple(Entry(i, 1, b"c%d" % i) for i in range(1, 5001))
    node = RaftNode(Config(1, (1, 2, 3), max_committed_per_ready=1000), random.Random(1), None)
    node.step(AppendEntries(1, 2, 1, 0, 0, entries, 5000))
    sizes = []
    while node.has_ready():
        ready = node.ready()
        sizes.append(len(ready.committed))
        node.advance(ready)
    assert sizes == [1000] * 5
    assert node.last_applied == 5000
