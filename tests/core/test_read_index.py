"""ReadIndex (dissertation section 6.4): linearizable reads without writing to the log."""

from __future__ import annotations

import pytest

from raftd.core import NotLeaderError, ReadState, Role
from raftd.core.events import ReadsAborted
from tests.core.network import Network


def read_states(net: Network, node_id: int) -> list[ReadState]:
    return [rs for ready in net.readies[node_id] for rs in ready.read_states]


def test_a_leader_serves_a_read_after_a_quorum_confirms_it_still_leads() -> None:
    """The read's index is the commit index when the read arrived, and it is released only
    after a heartbeat round that a majority answered."""
    net = Network(3)
    net.elect(1)
    net.propose(1, b"x")
    leader = net.nodes[1]
    commit = leader.commit_index
    leader.read_index(b"r1")
    net.process(1)
    assert read_states(net, 1) == []  # the heartbeats are only in flight
    net.stabilize()
    assert read_states(net, 1) == [ReadState(b"r1", commit)]


def test_reads_queued_together_share_one_heartbeat_round() -> None:
    net = Network(3)
    net.elect(1)
    before = len(net.delivered)
    for n in range(5):
        net.nodes[1].read_index(f"r{n}".encode())
    net.stabilize()
    heartbeats = [m for m in net.delivered[before:] if type(m).__name__ == "Heartbeat"]
    assert len(heartbeats) == 2  # one per follower, not one per read
    assert [rs.context for rs in read_states(net, 1)] == [f"r{n}".encode() for n in range(5)]


def test_a_new_leader_answers_reads_only_once_an_entry_of_its_term_commits() -> None:
    """Until its no-op commits, a new leader does not know the cluster's commit index."""
    net = Network(3)
    net.elect(1)
    net.propose(1, b"x")
    net.isolate(1)
    net.tick(30)
    new = net.wait_for_leader(among=(2, 3))
    node = net.nodes[new]
    net.cut(2, 3)  # the new leader's no-op cannot commit now
    node.tick()
    if node.role is Role.LEADER and node.log.term_at(node.commit_index) != node.current_term:
        node.read_index(b"early")
        net.tick(1)
        assert read_states(net, new) == []
    net.heal()
    net.tick(5)
    leader = net.leader()
    net.nodes[leader].read_index(b"late")
    net.stabilize()
    served = [rs for rs in read_states(net, leader) if rs.context == b"late"]
    assert served and served[0].index >= net.nodes[leader].log.last_index - 1


def test_a_follower_refuses_reads_and_names_the_leader() -> None:
    net = Network(3)
    net.elect(1)
    with pytest.raises(NotLeaderError) as refused:
        net.nodes[2].read_index(b"r")
    assert refused.value.leader_id == 1


def test_a_leader_cut_off_from_the_majority_serves_no_read_and_aborts_it() -> None:
    """The read never gets its quorum; when check-quorum makes the leader step down, the
    read is reported aborted so the runtime can fail it (it was never served)."""
    net = Network(3)
    net.elect(1)
    net.isolate(1)
    net.nodes[1].read_index(b"doomed")
    net.tick(25)
    assert read_states(net, 1) == []
    assert net.nodes[1].role is Role.FOLLOWER
    assert ReadsAborted((b"doomed",)) in net.events[1]


def test_a_lost_read_heartbeat_is_made_good_by_the_next_regular_one() -> None:
    net = Network(3)
    net.elect(1)
    net.nodes[1].read_index(b"r")
    net.process(1)
    net.drop_in_flight()  # the read round's heartbeats vanish
    net.tick(2)  # a regular heartbeat carries the latest round
    assert [rs.context for rs in read_states(net, 1)] == [b"r"]


def test_a_single_node_serves_reads_at_once() -> None:
    net = Network(1)
    net.elect(1)
    net.tick(1)
    net.nodes[1].read_index(b"solo")
    net.stabilize()
    assert [rs.context for rs in read_states(net, 1)] == [b"solo"]
