"""Four classic Raft safety bugs, each pinned by a scenario that would catch its return.

All four are about the durable (term, vote) record of Figure 2 or about which votes count:
get one wrong and two leaders can be elected in the same term. Several tests crash a node
right after it handled a Ready (``Network.crash`` after ``process``): what survives is
exactly what the Ready asked to persist.

``audit_persist_before_send`` watches every network here: whenever a Ready's messages are
about to leave, it checks that the (term, vote) and entries they depend on are durable.
"""

from __future__ import annotations

import pytest

from raftd.core import (
    HardState,
    NodeId,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from raftd.core.events import (
    BecameCandidate,
    BecameLeader,
    StaleMessageIgnored,
    SteppedDown,
    VoteRefused,
)
from tests.core.network import Network, audit_persist_before_send

ELECTION_TIMEOUT = 10


def audited(size: int = 3, **options: bool) -> Network:
    net = Network(size, **options)
    net.ready_observers.append(audit_persist_before_send)
    return net


def ready_with(net: Network, node_id: NodeId, event_type: type) -> Ready:
    """The first Ready of ``node_id`` that reported an event of ``event_type``."""
    return next(r for r in net.readies[node_id] if any(isinstance(e, event_type) for e in r.events))


# ---------------------------------------------- (a) persist on starting an election


def test_candidate_persists_new_term_and_self_vote_with_its_vote_requests() -> None:
    """The Ready that asks for votes carries hard_state (term+1, voted_for=self): the runtime
    makes it durable before the RequestVotes leave. Pre-vote off, so campaign() is the vote."""
    net = audited(pre_vote=False)
    net.nodes[1].campaign()
    net.process(1)

    ready = net.readies[1][-1]
    assert ready.hard_state == HardState(current_term=1, voted_for=1)
    requests = [m for m in ready.messages if isinstance(m, RequestVote)]
    assert sorted((m.dst, m.term, m.pre_vote) for m in requests) == [(2, 1, False), (3, 1, False)]
    assert net.storages[1].load().hard_state == HardState(1, 1)


def test_candidate_that_crashes_after_asking_remembers_its_term_and_vote() -> None:
    """A candidate crashes right after sending its requests. It restarts in the same term,
    still having voted for itself, so it cannot also vote for a rival in that term."""
    net = audited(pre_vote=False)
    net.nodes[1].campaign()
    net.process(1)
    net.crash(1)
    net.drop_in_flight()  # its requests are lost as well
    net.restart(1)
    assert (net.nodes[1].current_term, net.nodes[1].voted_for) == (1, 1)

    net.nodes[2].campaign()  # term 1 too
    net.stabilize()
    assert VoteRefused(1, 2, False, "already_voted") in net.events[1]
    assert net.leaders() == [2]  # elected by 2 and 3; node 1 kept its single vote for itself
    assert net.nodes[1].voted_for == 1


def test_with_pre_vote_the_real_vote_is_persisted_when_the_pre_vote_succeeds() -> None:
    """A pre-vote changes nothing durable; the switch to candidate, which happens while
    handling a pre-vote reply, is what must persist (term, self) with the real requests."""
    net = audited()
    net.nodes[1].campaign()
    net.process(1)
    pre = net.readies[1][-1]
    assert pre.hard_state is None
    assert {(m.term, m.pre_vote) for m in pre.messages if isinstance(m, RequestVote)} == {(1, True)}

    net.deliver()  # the pre-votes are granted
    net.deliver()  # the first grant makes node 1 a candidate
    assert net.nodes[1].role is Role.CANDIDATE
    ready = ready_with(net, 1, BecameCandidate)
    assert ready.hard_state == HardState(1, 1)
    assert {(m.term, m.pre_vote) for m in ready.messages if isinstance(m, RequestVote)} == {
        (1, False)
    }

    net.crash(1)
    net.drop_in_flight()
    net.restart(1)
    assert (net.nodes[1].current_term, net.nodes[1].voted_for) == (1, 1)


# ---------------------------------------------- (b) persist on becoming follower


def test_leader_stepping_down_to_a_higher_term_persists_that_term() -> None:
    """A follower cut off without pre-vote campaigns its term far ahead. When it returns,
    its reply to the leader's heartbeat carries that term and the leader steps down: the
    Ready of that step persists the new term (with no vote), and it survives a crash."""
    net = audited(pre_vote=False)
    net.elect(1)
    net.tick(3)
    term = net.nodes[1].current_term
    net.isolate(3)
    net.tick(4 * ELECTION_TIMEOUT)
    high = net.nodes[3].current_term
    assert high > term + 1

    net.heal()
    net.run_until(lambda: bool(net.events_of(1, SteppedDown)))
    ready = ready_with(net, 1, SteppedDown)
    assert SteppedDown(high, "higher_term") in ready.events
    assert ready.hard_state == HardState(high, None)

    net.crash(1)
    net.restart(1)
    assert (net.nodes[1].current_term, net.nodes[1].voted_for) == (high, None)


@pytest.mark.parametrize(
    ("last_log_index", "last_log_term", "granted", "durable_vote"),
    [(0, 0, False, None), (100, 9, True, 3)],
    ids=["refused", "granted"],
)
def test_voter_persists_a_higher_term_before_its_reply(
    last_log_index: int, last_log_term: int, granted: bool, durable_vote: NodeId | None
) -> None:
    """A follower asked for a vote in term 9 adopts term 9, and its reply (granted or not)
    says term 9. The same Ready carries hard_state (9, vote), so the reply can never be sent
    by a node that would restart in an older term. Check-quorum is off so that the follower,
    which just heard from its leader, does not ignore the request (leader lease)."""
    net = audited(check_quorum=False)
    net.elect(1)
    net.propose(1, b"x")
    net.tick(3)
    assert net.nodes[2].current_term == 1

    net.send([RequestVote(9, 3, 2, last_log_index, last_log_term)])
    net.deliver()
    ready = net.readies[2][-1]
    assert ready.hard_state == HardState(9, durable_vote)
    assert ready.messages == (RequestVoteResponse(9, 2, 3, granted, False),)

    net.crash(2)
    net.restart(2)
    assert (net.nodes[2].current_term, net.nodes[2].voted_for) == (9, durable_vote)


# ---------------------------------------------- (c) one vote per term, across crashes


def test_a_voter_refuses_a_second_candidate_in_the_same_term() -> None:
    """Node 2 votes for 1 in term 1 (its reply is lost); node 3 then asks in term 1 too and is
    refused with "already_voted", so nobody wins term 1 with node 2's vote twice."""
    net = audited(pre_vote=False)
    net.cut(1, 3)
    net.cut_one_way(2, 1)
    net.nodes[1].campaign()
    net.stabilize()
    assert (net.nodes[2].current_term, net.nodes[2].voted_for) == (1, 1)

    net.nodes[3].campaign()
    net.stabilize()
    assert net.nodes[3].current_term == 1
    assert VoteRefused(1, 3, False, "already_voted") in net.events[2]
    assert net.leaders() == []


def test_a_vote_survives_a_crash_so_one_term_has_one_leader() -> None:
    """Node 2 grants node 1 a vote in term 1; the reply is delayed and node 2 crashes. On
    restart it still remembers the vote and refuses node 3 in term 1. When the delayed reply
    lands, node 1 wins term 1, and it is the only leader that term ever has. Had the vote been
    forgotten, node 3 would have won term 1 too."""
    net = audited(pre_vote=False)
    net.cut(1, 3)
    net.nodes[1].campaign()
    net.deliver()  # node 2 grants
    delayed = net.drop_in_flight()
    assert delayed == [RequestVoteResponse(1, 2, 1, True, False, campaign=1)]

    net.crash(2)
    net.restart(2)
    assert (net.nodes[2].current_term, net.nodes[2].voted_for) == (1, 1)
    net.nodes[3].campaign()
    net.stabilize()
    assert VoteRefused(1, 3, False, "already_voted") in net.events[2]
    assert net.nodes[3].role is Role.CANDIDATE

    net.send(delayed)
    net.stabilize()
    assert net.nodes[1].role is Role.LEADER
    leaders_of_term_1 = [i for i in net.ids for e in net.events_of(i, BecameLeader) if e.term == 1]
    assert leaders_of_term_1 == [1]


# ---------------------------------------------- (d) stale vote replies are ignored


def test_vote_grants_from_an_older_term_do_not_elect_a_candidate() -> None:
    """Node 1's term-1 grants are delayed until it is campaigning in term 2, where nobody
    answers. They arrive, are reported as stale, and do not make it leader of term 2."""
    net = audited(pre_vote=False)
    node = net.nodes[1]
    node.campaign()
    net.deliver()  # 2 and 3 grant in term 1 ...
    late = net.drop_in_flight()  # ... but the replies are delayed
    assert late == [
        RequestVoteResponse(1, 2, 1, vote_granted=True, campaign=1),
        RequestVoteResponse(1, 3, 1, vote_granted=True, campaign=1),
    ]

    node.campaign()  # term 2; its requests are lost
    net.process(1)
    net.drop_in_flight()
    assert node.current_term == 2

    net.send(late)
    net.stabilize()
    assert node.role is Role.CANDIDATE
    assert node.current_term == 2
    assert StaleMessageIgnored(2, "RequestVoteResponse", 1, 2) in net.events[1]
    assert StaleMessageIgnored(3, "RequestVoteResponse", 1, 2) in net.events[1]
    assert net.events_of(1, BecameLeader) == []


def test_real_vote_grants_do_not_count_toward_a_later_pre_vote() -> None:
    """With pre-vote, a node that times out as candidate in term 1 starts a pre-vote for term 2
    while still in term 1. Late real-vote grants of term 1 share its current term, yet they
    must not count as pre-votes (nor as votes): it stays a pre-candidate."""
    net = audited()
    node = net.nodes[1]
    node.campaign()
    net.deliver()  # pre-votes granted
    net.deliver()  # node 1 becomes candidate of term 1 and asks for real votes
    net.deliver()  # 2 and 3 grant ...
    late = net.drop_in_flight()  # ... but the replies are delayed
    assert late == [
        RequestVoteResponse(1, 2, 1, vote_granted=True, campaign=2),
        RequestVoteResponse(1, 3, 1, vote_granted=True, campaign=2),
    ]

    node.campaign()  # a new pre-vote round for term 2; its requests are lost
    net.process(1)
    net.drop_in_flight()
    assert (node.role, node.current_term) == (Role.PRE_CANDIDATE, 1)

    net.send(late)
    net.stabilize()
    assert (node.role, node.current_term) == (Role.PRE_CANDIDATE, 1)
    assert StaleMessageIgnored(2, "RequestVoteResponse", 1, 1) in net.events[1]
    assert net.events_of(1, BecameLeader) == []
