"""Leadership transfer (Raft dissertation, section 3.10): the leader brings the target up to
date, stops taking proposals, and sends TimeoutNow; the target campaigns at once, past the
voters' leader lease; a transfer that does not finish within an election timeout is
aborted and proposals resume."""

from __future__ import annotations

import pytest

from raftd.core import LeaderTransferring, NotLeaderError, Role, TimeoutNow
from raftd.core.events import (
    ElectionStarted,
    LeaderTransferAborted,
    LeaderTransferStarted,
    TimeoutNowSent,
)
from raftd.core.types import RequestVote
from tests.core.network import Network, assert_applied_agree


def test_a_transfer_to_an_up_to_date_follower_makes_it_leader_without_a_timeout() -> None:
    net = Network()
    leader = net.elect(1)
    net.propose(1, b"before")
    term = leader.current_term
    leader.transfer_leadership(2)
    net.stabilize()  # no tick at all: only messages
    assert net.nodes[2].role is Role.LEADER and net.nodes[2].current_term == term + 1
    assert leader.role is Role.FOLLOWER and leader.leader_id == 2
    assert net.events_of(1, LeaderTransferStarted) == [LeaderTransferStarted(term, 2)]
    assert net.events_of(1, TimeoutNowSent) == [TimeoutNowSent(term, 2)]
    assert ElectionStarted(term + 1, False, "transfer") in net.events[2]
    votes = [m for m in net.delivered if isinstance(m, RequestVote) and m.src == 2]
    assert votes and all(m.transfer and not m.pre_vote for m in votes)
    net.propose(2, b"after")
    net.tick(2)  # the followers learn the commit with the next heartbeat
    assert net.commands(1) == net.commands(3) == [b"before", b"after"]


def test_a_lagging_target_is_caught_up_first_and_proposals_wait_meanwhile() -> None:
    net = Network()
    leader = net.elect(1)
    net.cut(1, 3)
    for n in range(5):
        net.propose(1, f"c{n}".encode())
    assert net.nodes[1].progress(3).match_index < leader.log.last_index
    leader.transfer_leadership(3)
    with pytest.raises(LeaderTransferring) as refused:
        leader.propose(b"during")
    assert refused.value.target == 3
    net.stabilize()
    assert net.events_of(1, TimeoutNowSent) == []  # 3 is still behind, unreachable
    net.heal()
    net.tick(3)  # a heartbeat finds 3 behind; the append catches it up; TimeoutNow follows
    assert net.leader() == 3
    assert_applied_agree(net)
    assert net.commands(3)[:5] == [f"c{n}".encode() for n in range(5)]


def test_a_transfer_that_does_not_finish_in_an_election_timeout_is_aborted() -> None:
    net = Network()
    leader = net.elect(1)
    net.isolate(2)
    net.tick(1)
    leader.transfer_leadership(2)
    net.tick(net.config(1).election_timeout_ticks)
    assert leader.role is Role.LEADER and leader.transferee is None
    aborted = net.events_of(1, LeaderTransferAborted)
    assert aborted == [LeaderTransferAborted(leader.current_term, 2, "timeout")]
    net.propose(1, b"resumed")  # proposals are taken again
    assert net.commands(1)[-1] == b"resumed"


def test_the_target_campaigns_past_the_voters_leader_lease() -> None:
    # Without the transfer flag, voters that heard from the leader a moment ago ignore
    # the target's RequestVote (section 4.2.3), and the transfer would always time out.
    net = Network()
    leader = net.elect(1)
    net.tick(1)
    assert net.nodes[3]._in_leader_lease()
    leader.transfer_leadership(2)
    net.stabilize()
    assert net.leader() == 2


def test_timeout_now_from_anyone_but_the_leader_is_ignored() -> None:
    net = Network()
    net.elect(1)
    follower = net.nodes[2]
    term = follower.current_term
    follower.step(TimeoutNow(term, 3, 2))  # 3 is not the leader
    net.process(2)
    assert follower.role is Role.FOLLOWER and follower.current_term == term
    follower.step(TimeoutNow(term - 1, 1, 2))  # a stale one
    net.process(2)
    assert follower.role is Role.FOLLOWER and follower.current_term == term


def test_only_a_leader_transfers_and_only_to_a_voter() -> None:
    net = Network()
    leader = net.elect(1)
    with pytest.raises(NotLeaderError):
        net.nodes[2].transfer_leadership(3)
    with pytest.raises(ValueError, match="not a voting member"):
        leader.transfer_leadership(9)
    leader.transfer_leadership(1)  # to itself: nothing to do
    assert leader.transferee is None and leader.role is Role.LEADER


def test_a_new_target_replaces_the_one_in_progress() -> None:
    net = Network()
    leader = net.elect(1)
    net.isolate(2)
    leader.transfer_leadership(2)
    leader.transfer_leadership(3)
    net.stabilize()
    assert net.events_of(1, LeaderTransferAborted)[0].reason == "superseded"
    assert net.leader() == 3
