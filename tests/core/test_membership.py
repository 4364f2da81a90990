"""Membership changes in the core (Raft dissertation 4.1): one voter at a time, in force on
append, undone with a truncated entry, learners that never vote, a removed leader stepping
down once its removal commits, and the configuration carried by snapshots."""

from __future__ import annotations

import pytest

from raftd.core import EntryKind, Role
from raftd.core.events import MembershipChanged, SteppedDown, TimeoutNowSent
from raftd.core.membership import Membership, MembershipError
from raftd.core.node import DEPARTING_TIMEOUTS
from raftd.core.types import AppendEntries, Entry, RequestVote
from tests.core.network import Network, assert_applied_agree


def change(
    net: Network, leader: int, voters: tuple[int, ...], learners: tuple[int, ...] = ()
) -> int:
    index, _ = net.nodes[leader].propose_membership(Membership.of(voters, learners))
    net.stabilize()
    return index


def test_a_learner_is_added_caught_up_and_promoted_and_then_counts() -> None:
    net = Network(3, spares=1)
    net.elect(1)
    for n in range(5):
        net.propose(1, f"c{n}".encode())
    change(net, 1, (1, 2, 3), learners=(4,))
    net.tick(2)
    learner = net.nodes[4]
    assert learner.membership.learners == (4,) and learner.role is Role.FOLLOWER
    assert net.commands(4) == [f"c{n}".encode() for n in range(5)]
    # A learner never campaigns, however long it hears nothing.
    net.isolate(4)
    net.tick(50)
    assert learner.role is Role.FOLLOWER and learner.current_term == net.nodes[1].current_term
    net.heal()
    net.tick(2)
    change(net, 1, (1, 2, 3, 4))
    net.tick(2)
    assert net.nodes[4].membership.voters == (1, 2, 3, 4)
    # Four voters: a majority is three, so two down stop commits.
    net.crash(2)
    net.crash(3)
    index, _ = net.nodes[1].propose(b"needs three")
    net.stabilize()
    assert net.nodes[1].commit_index < index
    net.restart(2)
    net.tick(3)
    assert net.nodes[1].commit_index >= index


def test_a_change_is_in_force_on_append_and_undone_when_its_entry_is_cut() -> None:
    net = Network(3, spares=1)
    leader = net.elect(1)
    net.propose(1, b"x")
    net.isolate(1)
    leader.propose_membership(Membership.of((1, 2, 3), (4,)))
    net.stabilize()
    assert leader.membership.learners == (4,)  # in force before it commits
    assert leader.commit_index < leader.log.last_index
    new = net.wait_for_leader(among=(2, 3))
    net.heal()
    net.propose(new, b"y")
    net.tick(3)
    # 1's uncommitted configuration entry was replaced: the one before is in force again.
    assert net.nodes[1].role is Role.FOLLOWER
    assert net.nodes[1].membership.learners == ()
    changed = net.events_of(1, MembershipChanged)
    assert [c.learners for c in changed] == [(4,), ()]


def test_one_voter_at_a_time_and_one_change_at_a_time() -> None:
    net = Network(3, spares=2)
    leader = net.elect(1)
    net.propose(1, b"x")
    with pytest.raises(MembershipError, match="one voter at a time"):
        leader.propose_membership(Membership.of((1, 2, 3, 4, 5)))
    with pytest.raises(MembershipError, match="at least one voter"):
        leader.propose_membership(Membership.of((), (1, 2, 3)))
    net.cut(1, 2)
    net.cut(1, 3)
    leader.propose_membership(Membership.of((1, 2, 3), (4,)))
    with pytest.raises(MembershipError, match="not committed yet"):
        leader.propose_membership(Membership.of((1, 2, 3), (4, 5)))


def test_a_new_leader_changes_nothing_before_it_committed_an_entry_of_its_term() -> None:
    # The fix to the single-server algorithm: the no-op of its term must commit first.
    net = Network(3, spares=1)
    net.elect(1)
    net.isolate(1)
    net.run_until(lambda: any(net.nodes[i].role is Role.LEADER for i in (2, 3)))
    node = next(net.nodes[i] for i in (2, 3) if net.nodes[i].role is Role.LEADER)
    assert node.commit_index < node.log.last_index  # its no-op is not committed yet
    with pytest.raises(MembershipError, match="not yet committed an entry of its own term"):
        node.propose_membership(Membership.of((1, 2, 3), (4,)))
    net.stabilize()
    node.propose_membership(Membership.of((1, 2, 3), (4,)))


def test_promotion_waits_until_the_learner_caught_up() -> None:
    net = Network(3, spares=1)
    net.elect(1)
    change(net, 1, (1, 2, 3), learners=(4,))
    net.isolate(4)
    for n in range(30):
        net.propose(1, f"c{n}".encode())
    with pytest.raises(MembershipError, match="promote it once it has caught up"):
        net.nodes[1].propose_membership(Membership.of((1, 2, 3, 4)))
    net.heal()
    net.tick(3)
    change(net, 1, (1, 2, 3, 4))
    assert net.nodes[1].membership.voters == (1, 2, 3, 4)


def test_a_removed_leader_steps_down_once_the_change_commits_and_the_rest_go_on() -> None:
    net = Network(3)
    leader = net.elect(1)
    term = leader.current_term
    net.propose(1, b"before")
    index = change(net, 1, (2, 3))
    assert leader.commit_index >= index
    assert leader.role is Role.FOLLOWER
    assert SteppedDown(term, "removed") in net.events[1]
    # The removed member never campaigns again; the others elect one of themselves.
    new = net.wait_for_leader(among=(2, 3))
    net.propose(new, b"after")
    net.tick(60)
    assert net.nodes[1].role is Role.FOLLOWER
    assert net.leader() == new
    assert net.commands(2)[-1] == b"after"
    # Votes of a removed member do not count: a candidate needs a majority of {2, 3}.
    assert all(m.dst != 1 for m in net.delivered if isinstance(m, RequestVote) and m.term > 2)


def test_a_removed_leader_hands_over_to_the_most_caught_up_voter_as_it_steps_down() -> None:
    """No election timeout waited out: with its removal committed, the leader tells the
    remaining voter that has its whole log to campaign at once (TimeoutNow)."""
    net = Network(3)
    leader = net.elect(1)
    term = leader.current_term
    net.propose(1, b"before")
    change(net, 1, (2, 3))  # stabilize delivers every message, with no tick at all
    sent = [e for e in net.events[1] if isinstance(e, TimeoutNowSent)]
    assert len(sent) == 1 and sent[0].target in (2, 3)
    assert net.leader() == sent[0].target
    assert net.nodes[sent[0].target].current_term == term + 1
    net.propose(sent[0].target, b"after")
    net.tick(5)  # followers learn the commit from the next heartbeat
    assert net.commands(2)[-1] == net.commands(3)[-1] == b"after"


def test_a_snapshot_carries_the_configuration_to_a_member_that_missed_the_change() -> None:
    net = Network(3, spares=1)
    net.elect(1)
    net.crash(3)
    change(net, 1, (1, 2, 3), learners=(4,))
    for n in range(10):
        net.propose(1, f"c{n}".encode())
    snapshot = net.snapshot(1)
    assert Membership.decode(snapshot.meta.config).learners == (4,)
    net.restart(3)
    net.tick(5)
    assert net.nodes[3].membership.learners == (4,)
    assert net.nodes[3].log.snapshot_index == snapshot.meta.index
    # And a restart from that snapshot keeps it too.
    net.snapshot(3)
    net.crash(3)
    net.restart(3)
    assert net.nodes[3].membership.learners == (4,)
    assert_applied_agree(net)


def test_a_member_to_be_accepts_the_log_from_a_leader_it_does_not_know_yet() -> None:
    net = Network(3, spares=1)
    net.elect(1)
    joiner = net.nodes[4]
    assert joiner.membership.voters == () and joiner.membership.learners == ()
    change(net, 1, (1, 2, 3), learners=(4,))
    net.tick(2)
    kinds = [e.kind for e in net.applied[4]]
    assert EntryKind.CONFIG in kinds and joiner.leader_id == 1


def test_a_configuration_entry_that_cannot_be_read_is_refused_with_a_reason() -> None:
    with pytest.raises(MembershipError, match="unreadable"):
        Membership.decode(b"not json")
    with pytest.raises(MembershipError, match="positive integers"):
        Membership.decode(b'{"voters": [0]}')
    with pytest.raises(MembershipError, match="listed twice"):
        Membership.decode(b'{"voters": [1], "learners": [1]}')
    extra = Membership.of((1,), extra={"names": {"1": "n1"}}).extra()
    assert extra == {"names": {"1": "n1"}}
    # Entries travel as data: an AppendEntries carrying one is no different.
    assert AppendEntries(1, 1, 2, 0, 0, (Entry(1, 1, b"{}", EntryKind.CONFIG),), 0)


def test_a_removed_follower_learns_that_its_removal_committed_and_is_then_left_alone() -> None:
    # Nothing else would tell it: once out of the configuration it gets no heartbeats.
    net = Network(3)
    leader = net.elect(1)
    index = change(net, 1, (1, 2))
    assert leader.commit_index >= index
    assert 3 in leader.departing
    net.tick(net.config(1).election_timeout_ticks)
    assert net.nodes[3].commit_index >= index  # it knows it is out
    net.tick(DEPARTING_TIMEOUTS * net.config(1).election_timeout_ticks)
    assert not leader.departing
    sent = len(net.delivered)
    net.tick(10)
    assert all(m.dst != 3 for m in net.delivered[sent:])


def test_a_new_leader_also_tells_a_removed_member_about_its_removal() -> None:
    net = Network(4)
    net.elect(1)
    net.isolate(4)
    index = change(net, 1, (1, 2, 3))  # commits on 1, 2 and 3; 4 hears nothing
    net.crash(1)
    net.heal()
    new = net.wait_for_leader(among=(2, 3))
    assert 4 in net.nodes[new].departing
    net.tick(net.config(2).election_timeout_ticks)
    assert net.nodes[4].commit_index >= index
