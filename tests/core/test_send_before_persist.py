"""``Ready.send_before_persist``: only a leader whose (term, vote) is durable may send first.

The runtime sends such a bundle's messages before its fsync, so the leader's disk and the
round trip to its followers overlap. That is safe only because nothing in those messages
depends on this bundle's writes: a leader's AppendEntries carry entries and a commit index,
and the leader counts its own copy of new entries towards a majority only once ``advance``
says they are durable. These tests pin both halves.
"""

from __future__ import annotations

import pytest

from raftd.core import AppendEntries, AppendEntriesResponse, RequestVoteResponse, Role
from raftd.core.events import BecameLeader
from raftd.storage import stage_ready
from tests.core.network import Network


def elected(size: int = 3) -> Network:
    net = Network(size)
    net.run_until(lambda: any(n.role is Role.LEADER for n in net.nodes.values()))
    net.stabilize()
    return net


def leader_of(net: Network) -> int:
    return next(i for i, n in net.nodes.items() if n.role is Role.LEADER)


def test_only_a_leader_with_a_durable_term_and_vote_sends_first() -> None:
    net = elected()
    leader = leader_of(net)
    for i in range(5):
        net.nodes[leader].propose(f"cmd{i}".encode())
        net.stabilize()
    for node_id, readies in net.readies.items():
        for ready in readies:
            if not ready.send_before_persist:
                continue
            assert node_id == leader
            assert ready.hard_state is None
            # Nothing a follower or a voter would say: those need durable state.
            assert not any(
                isinstance(m, AppendEntriesResponse | RequestVoteResponse) for m in ready.messages
            )
    assert any(r.send_before_persist and r.entries for r in net.readies[leader])


def test_a_single_member_that_elects_itself_persists_its_vote_first() -> None:
    """Term, vote and leadership all change in one bundle: that one is not sent early."""
    net = elected(size=1)
    winning = next(r for r in net.readies[1] if any(isinstance(e, BecameLeader) for e in r.events))
    assert winning.hard_state is not None and not winning.send_before_persist


def test_the_leader_counts_its_own_entries_only_once_they_are_durable() -> None:
    """A follower may persist and acknowledge an entry before the leader's own fsync is
    done; the acknowledgement must not be counted before the leader's ``advance``."""
    net = elected()
    leader = leader_of(net)
    node = net.nodes[leader]
    follower, other = (i for i in net.ids if i != leader)
    net.isolate(other)
    index, _ = node.propose(b"needs-the-leader")
    ready = node.ready()
    assert ready.send_before_persist and ready.entries[-1].index == index
    # The follower receives, persists and acknowledges before the leader's fsync is done.
    for msg in ready.messages:
        if msg.dst == follower:
            net.nodes[follower].step(msg)
    net.process(follower)
    acks = [m for m in net.drop_in_flight() if m.dst == leader]
    assert any(isinstance(m, AppendEntriesResponse) and m.match_index >= index for m in acks)
    # The ack cannot count yet: input between ready() and advance() is refused, so the
    # runtime must finish the leader's fsync first.
    with pytest.raises(RuntimeError, match="between ready"):
        node.step(acks[0])
    stage_ready(net.storages[leader], ready)
    net.storages[leader].sync()
    node.advance(ready)
    for msg in acks:
        node.step(msg)
    assert node.commit_index >= index


def _leader_staging(net: Network, data: bytes) -> tuple[int, int, int]:
    """The leader proposes ``data`` and hands it to storage without syncing (the runtime's
    background sync); the followers' acknowledgements are left in flight."""
    leader = leader_of(net)
    node = net.nodes[leader]
    index, term = node.propose(data)
    ready = node.ready()
    assert ready.send_before_persist and ready.entries[-1].index == index
    net.send(ready.messages)
    stage_ready(net.storages[leader], ready)
    node.advance(ready, persisted=False)
    return leader, index, term


def test_a_leader_syncing_later_needs_a_majority_without_its_own_copy() -> None:
    """Staged is not durable: with one follower cut off, one acknowledgement does not
    commit (the leader's copy would be the second) until the leader reports its fsync."""
    net = elected()
    leader = leader_of(net)
    net.isolate(next(i for i in net.ids if i != leader))
    _, index, term = _leader_staging(net, b"staged")
    net.stabilize()
    node = net.nodes[leader]
    assert node.commit_index < index
    net.storages[leader].sync()
    node.persisted(index, term)
    assert node.commit_index == index


def test_two_followers_commit_while_the_leaders_fsync_runs() -> None:
    net = elected()
    leader, index, _ = _leader_staging(net, b"theirs")
    net.stabilize()
    assert net.nodes[leader].commit_index == index


def test_a_report_about_a_replaced_log_is_ignored() -> None:
    """A leader staged an entry, lost leadership, and a new leader's entry took its index
    before the old fsync was reported: the report is about an entry no longer in the log,
    and the new one (not yet written) must not pass for durable."""
    net = elected()
    old = leader_of(net)
    net.isolate(old)
    _, index, term = _leader_staging(net, b"lost")
    net.drop_in_flight()
    others = [i for i in net.ids if i != old]
    net.run_until(lambda: any(net.nodes[i].role is Role.LEADER for i in others))
    new = next(i for i in others if net.nodes[i].role is Role.LEADER)
    net.nodes[new].propose(b"new")
    net.stabilize()
    # The new leader's entries reach the old one in a single AppendEntries, stepped with
    # nothing written since: the runtime's report of the old fsync arrives just then.
    theirs = net.nodes[new].log
    node = net.nodes[old]
    node.step(
        AppendEntries(
            theirs.term_at(index) or 0,
            new,
            old,
            index - 1,
            theirs.term_at(index - 1) or 0,
            theirs.slice(index, theirs.last_index + 1),
            0,
        )
    )
    assert node.log.term_at(index) not in (None, term)
    stable_before = node._stable_last_index
    assert stable_before < index
    node.persisted(index, term)
    assert node._stable_last_index == stable_before


def test_an_empty_bundle_does_not_vouch_for_a_sync_still_running() -> None:
    net = elected()
    leader = leader_of(net)
    node = net.nodes[leader]
    before = node._stable_last_index
    _, index, _ = _leader_staging(net, b"pending")
    node.read_index(b"a heartbeat round: messages, nothing to write")
    assert node.has_ready()
    while node.has_ready():
        ready = node.ready()
        assert not ready.entries
        node.advance(ready)
    assert node._stable_last_index == before < index


def test_only_a_bundle_that_may_be_sent_first_may_be_persisted_later() -> None:
    net = Network(3)
    net.nodes[1].campaign()
    ready = net.nodes[1].ready()
    assert not ready.send_before_persist
    with pytest.raises(RuntimeError, match="persisted later"):
        net.nodes[1].advance(ready, persisted=False)
