"""The scenarios of Eli Bendersky's Raft series (parts 1-3), replayed on the pure core.

His harness sleeps and disconnects peers; here time is ``tick()`` and a disconnected peer is
``Network.isolate``. Two differences from his implementation change some expectations, and
each test says where:

- pre-vote: a node cut off from the cluster cannot win a pre-vote, so it never raises its
  term, and rejoining it does not force an election;
- check-quorum: a leader that cannot hear from a majority steps down by itself, so "no
  leader" holds everywhere, not only among the connected nodes;
- every new leader appends a no-op of its term, so earlier-term entries commit as soon as a
  new leader is elected, without waiting for the next client command.
"""

from __future__ import annotations

import pytest

from raftd.core import EntryKind, NodeId, NotLeaderError, Role
from raftd.core.events import SteppedDown
from tests.core.network import (
    Network,
    assert_applied_agree,
    assert_committed,
    assert_not_committed,
)

ELECTION_TIMEOUT = 10  # Network's default, in ticks
SETTLE = 5 * ELECTION_TIMEOUT  # long enough for any election or step-down to finish


def started(size: int = 3, seed: int = 0) -> tuple[Network, NodeId]:
    """A cluster that elected its first leader through election timeouts alone."""
    net = Network(size, seed=seed)
    leader = net.wait_for_leader()
    net.tick(3)  # a heartbeat round: everyone knows the leader
    return net, leader


def others(net: Network, *excluded: NodeId) -> list[NodeId]:
    return [i for i in net.ids if i not in excluded]


def reconnect_all_but(net: Network, *still_isolated: NodeId) -> None:
    net.heal()
    for node_id in still_isolated:
        net.isolate(node_id)


def term_of(net: Network, node_id: NodeId) -> int:
    return net.nodes[node_id].current_term


# ------------------------------------------------------------------ part 1: elections


def test_election_basic() -> None:
    """Three nodes left to their timers elect exactly one leader, which then stays."""
    net, leader = started()
    term = term_of(net, leader)
    net.tick(SETTLE)
    assert net.leaders() == [leader]
    assert {n.current_term for n in net.nodes.values()} == {term}
    assert all(net.nodes[i].leader_id == leader for i in net.ids)


def test_election_leader_disconnect() -> None:
    """The two remaining nodes replace a leader that vanished, in a later term."""
    net, old = started()
    old_term = term_of(net, old)
    net.isolate(old)
    new = net.wait_for_leader(among=others(net, old))
    assert new != old
    assert term_of(net, new) > old_term


def test_election_leader_and_another_disconnect() -> None:
    """With two of three nodes gone nobody can lead; bringing one back restores a leader.

    Bendersky checks "no leader" among the connected nodes only; with check-quorum even the
    isolated old leader gives up, so there is no leader anywhere.
    """
    net, old = started()
    term = term_of(net, old)
    other = others(net, old)[0]
    net.isolate(old)
    net.isolate(other)
    net.tick(SETTLE)
    assert net.leaders() == []
    assert net.events_of(old, SteppedDown) == [SteppedDown(term, "check_quorum")]

    reconnect_all_but(net, old)
    new = net.wait_for_leader(among=others(net, old))
    assert new != old


def test_disconnect_all_then_restore() -> None:
    """No node alone can elect itself; when the links return, one leader emerges.

    With pre-vote none of the lonely nodes raised its term while cut off.
    """
    net, old = started()
    term = term_of(net, old)
    for node_id in net.ids:
        net.isolate(node_id)
    net.tick(SETTLE)
    assert net.leaders() == []
    assert all(n.current_term == term for n in net.nodes.values())

    net.heal()
    new = net.wait_for_leader()
    net.tick(SETTLE)
    assert net.leaders() == [new]
    assert term_of(net, new) == term + 1


@pytest.mark.parametrize("size", [3, 5])
def test_election_leader_disconnect_then_reconnect(size: int) -> None:
    """An old leader that comes back follows the new one instead of disrupting it."""
    net, old = started(size)
    net.isolate(old)
    new = net.wait_for_leader(among=others(net, old))
    new_term = term_of(net, new)

    net.heal()
    net.tick(SETTLE)
    assert net.leaders() == [new]
    assert all(n.current_term == new_term for n in net.nodes.values())
    assert net.nodes[old].leader_id == new


def test_election_follower_comes_back() -> None:
    """A follower returning from a long partition rejoins without an election.

    Bendersky expects the term to rise here (the follower campaigned while alone and comes
    back with a higher term). With pre-vote it never got past the pre-vote, so its term and
    the cluster's stay where they were, and the leader keeps its job.
    """
    net, leader = started()
    term = term_of(net, leader)
    follower = others(net, leader)[0]
    net.isolate(follower)
    net.tick(6 * ELECTION_TIMEOUT)
    assert term_of(net, follower) == term
    assert net.nodes[follower].role is not Role.LEADER

    net.heal()
    net.tick(SETTLE)
    assert net.leaders() == [leader]
    assert all(n.current_term == term for n in net.nodes.values())
    assert net.nodes[follower].leader_id == leader


def test_election_disconnect_loop() -> None:
    """Five rounds of: cut the leader and one more node (no leader), then reconnect both
    (exactly one leader). The cluster never ends up with two leaders."""
    net, leader = started()
    for _ in range(5):
        other = others(net, leader)[0]
        net.isolate(leader)
        net.isolate(other)
        net.tick(SETTLE)
        assert net.leaders() == []

        net.heal()
        leader = net.wait_for_leader()
        net.tick(SETTLE)
        assert net.leaders() == [leader]
        term = term_of(net, leader)
        assert all(n.current_term == term for n in net.nodes.values())


def test_election_leader_disconnect_loop() -> None:
    """Five rounds of: cut the leader off alone, let the other two elect a successor, bring
    the old one back. Each round ends with one leader that everyone follows, in one term."""
    net, leader = started()
    for _ in range(5):
        old_term = term_of(net, leader)
        net.isolate(leader)
        new = net.wait_for_leader(among=others(net, leader))
        assert term_of(net, new) > old_term
        net.heal()
        net.tick(SETTLE)
        assert net.leaders() == [new]
        assert all(n.leader_id == new for n in net.nodes.values())
        assert all(n.current_term == term_of(net, new) for n in net.nodes.values())
        leader = new


# -------------------------------------------------------------- part 2: commands


def test_commit_one_command() -> None:
    """A command proposed to the leader is applied by all three nodes at the same index."""
    net, leader = started()
    index, term = net.propose(leader, b"42")
    net.tick(3)
    assert assert_committed(net, b"42", 3) == index
    assert net.nodes[leader].log.term_at(index) == term


def test_submit_to_non_leader_fails() -> None:
    """A follower refuses proposals and names the leader; with no leader there is no hint."""
    net = Network(3)
    with pytest.raises(NotLeaderError) as no_leader_yet:
        net.nodes[1].propose(b"x")
    assert no_leader_yet.value.leader_id is None

    leader = net.wait_for_leader()
    net.tick(3)
    follower = others(net, leader)[0]
    last_index = net.nodes[follower].log.last_index
    with pytest.raises(NotLeaderError) as refused:
        net.nodes[follower].propose(b"42")
    assert refused.value.leader_id == leader
    assert net.nodes[follower].log.last_index == last_index
    net.tick(3)
    assert_not_committed(net, b"42")


def test_commit_multiple_commands() -> None:
    """Commands are applied everywhere in the order the leader received them."""
    net, leader = started()
    indexes = [net.propose(leader, cmd)[0] for cmd in (b"40", b"41", b"42")]
    net.tick(3)
    assert indexes == sorted(indexes)
    for cmd, index in zip((b"40", b"41", b"42"), indexes, strict=True):
        assert assert_committed(net, cmd, 3) == index
    assert all(net.commands(i) == [b"40", b"41", b"42"] for i in net.ids)


def test_commit_with_disconnection_and_recover() -> None:
    """A leader and one follower still commit; the cut follower catches up when it returns."""
    net, leader = started()
    net.propose(leader, b"5")
    net.propose(leader, b"6")
    net.tick(3)
    assert_committed(net, b"6", 3)

    cut = others(net, leader)[0]
    net.isolate(cut)
    net.propose(leader, b"7")
    net.tick(3)
    assert_committed(net, b"7", 2)
    assert b"7" not in net.commands(cut)

    net.heal()
    net.tick(SETTLE)
    assert net.leaders() == [leader]
    assert_committed(net, b"7", 3)
    assert_applied_agree(net)


@pytest.mark.parametrize("seed", [0, 3])
def test_no_commit_without_quorum(seed: int) -> None:
    """A leader alone cannot commit. Once the cluster reunites a new term begins, and the
    stranded command is either committed everywhere or nowhere.

    Bendersky's leader does not append a no-op, so "8" stays uncommitted there; here it is
    committed at once if the old leader, whose log is the longest, wins again. (With seed 0
    it does; with seed 3 one of the other two wins and "8" is dropped.)
    """
    net, leader = started(seed=seed)
    term = term_of(net, leader)
    net.propose(leader, b"5")
    net.propose(leader, b"6")
    net.tick(3)
    assert_committed(net, b"6", 3)

    for follower in others(net, leader):
        net.isolate(follower)
    net.propose(leader, b"8")
    net.tick(3)
    assert_not_committed(net, b"8")
    net.tick(SETTLE)
    assert_not_committed(net, b"8")
    assert net.leaders() == []  # check-quorum made the lonely leader step down

    net.heal()
    new = net.wait_for_leader()
    assert term_of(net, new) > term
    for cmd in (b"9", b"10", b"11"):
        net.propose(new, cmd)
    net.tick(3)
    for cmd in (b"9", b"10", b"11"):
        assert_committed(net, cmd, 3)
    eight = net.committed_on(b"8")
    assert len(eight) in (0, 3)
    assert (len(eight) == 3) == (new == leader)
    assert_applied_agree(net)


def test_disconnect_leader_briefly() -> None:
    """A blip shorter than the election timeout changes nothing: same leader, same term."""
    net, leader = started()
    term = term_of(net, leader)
    net.propose(leader, b"5")
    net.propose(leader, b"6")
    net.tick(3)
    assert_committed(net, b"6", 3)

    net.isolate(leader)
    net.tick(ELECTION_TIMEOUT // 2)
    net.heal()
    net.tick(3)
    net.propose(leader, b"7")
    net.tick(3)
    assert_committed(net, b"7", 3)
    assert net.leaders() == [leader]
    assert all(n.current_term == term for n in net.nodes.values())


def test_commits_with_leader_disconnects() -> None:
    """Five nodes: a command given to a leader just cut off is never committed, the new
    leader's commands are, and the returning old leader loses its stray entry."""
    net, old = started(5)
    net.propose(old, b"5")
    net.propose(old, b"6")
    net.tick(3)
    assert_committed(net, b"6", 5)

    net.isolate(old)
    assert net.nodes[old].role is Role.LEADER  # it does not know yet
    net.propose(old, b"7")
    net.tick(3)
    assert_not_committed(net, b"7")

    new = net.wait_for_leader(among=others(net, old))
    net.propose(new, b"8")
    net.tick(3)
    assert_committed(net, b"8", 4)

    net.heal()
    net.tick(SETTLE)
    assert net.leaders() == [new]
    net.propose(new, b"9")
    net.tick(3)
    assert_committed(net, b"9", 5)
    assert_committed(net, b"8", 5)
    assert_not_committed(net, b"7")
    assert all(e.data != b"7" for e in net.nodes[old].log.slice(1, 1000))
    assert_applied_agree(net)


# ---------------------------------------------------------- part 3: persistence


def test_crash_follower() -> None:
    """Losing a follower loses nothing: the other two still hold the command."""
    net, leader = started()
    net.propose(leader, b"5")
    net.tick(3)
    assert_committed(net, b"5", 3)

    net.crash(others(net, leader)[0])
    net.tick(SETTLE)
    assert net.leaders() == [leader]
    assert_committed(net, b"5", 2)


def test_crash_then_restart_follower() -> None:
    """A restarted follower rebuilds its state machine from its durable log once the leader
    tells it the commit index."""
    net, leader = started()
    for cmd in (b"5", b"6", b"7"):
        net.propose(leader, cmd)
    net.tick(3)
    follower = others(net, leader)[0]
    net.crash(follower)
    net.restart(follower)
    assert net.applied[follower] == []
    assert net.nodes[follower].log.last_index == net.nodes[leader].log.last_index

    net.tick(3)
    for cmd in (b"5", b"6", b"7"):
        assert_committed(net, cmd, 3)
    assert_applied_agree(net)


def test_crash_then_restart_leader() -> None:
    """The survivors elect a leader; the old one comes back as a follower with all data."""
    net, old = started()
    for cmd in (b"5", b"6", b"7"):
        net.propose(old, cmd)
    net.tick(3)
    net.crash(old)
    new = net.wait_for_leader(among=others(net, old))
    net.restart(old)
    net.tick(SETTLE)
    assert net.leaders() == [new]
    for cmd in (b"5", b"6", b"7"):
        assert_committed(net, cmd, 3)
    assert net.commands(old) == [b"5", b"6", b"7"]


def test_crash_then_restart_all() -> None:
    """A full-cluster power cut loses no committed command."""
    net, leader = started()
    term = term_of(net, leader)
    for cmd in (b"5", b"6", b"7"):
        net.propose(leader, cmd)
    net.tick(3)
    for node_id in net.ids:
        net.crash(node_id)
    for node_id in net.ids:
        net.restart(node_id)
        assert net.nodes[node_id].current_term == term
        assert net.nodes[node_id].commit_index == 0  # the commit index is not durable

    new = net.wait_for_leader()
    assert term_of(net, new) > term
    net.tick(3)
    for cmd in (b"5", b"6", b"7"):
        assert_committed(net, cmd, 3)
    assert_applied_agree(net)


def test_replace_multiple_log_entries() -> None:
    """An isolated leader accepts four commands that can never commit. The majority moves on;
    its new leader is crashed and restarted to reset its view of the followers; when the old
    leader rejoins, its uncommitted tail is replaced by the majority's entries."""
    net, old = started()
    net.propose(old, b"5")
    net.propose(old, b"6")
    net.tick(3)
    assert_committed(net, b"6", 3)

    net.isolate(old)
    stray = [net.propose(old, cmd) for cmd in (b"21", b"22", b"23", b"24")]
    rest = others(net, old)
    second = net.wait_for_leader(among=rest)
    for cmd in (b"8", b"9", b"10"):
        net.propose(second, cmd)
    net.tick(3)
    assert_not_committed(net, b"21")
    assert_committed(net, b"10", 2)

    net.crash(second)
    net.tick(ELECTION_TIMEOUT)
    net.restart(second)
    final = net.wait_for_leader(among=rest)

    net.heal()
    net.tick(SETTLE)
    assert net.leaders() == [final]
    net.propose(final, b"11")
    net.tick(3)
    assert_not_committed(net, b"21")
    assert_committed(net, b"11", 3)
    assert_committed(net, b"10", 3)
    assert_applied_agree(net)
    # Every stray entry was overwritten by an entry of a later term.
    old_log = net.nodes[old].log
    for index, term in stray:
        assert old_log.term_at(index) != term
    assert [e.data for e in old_log.slice(1, 1000) if e.kind is EntryKind.NORMAL] == [
        b"5",
        b"6",
        b"8",
        b"9",
        b"10",
        b"11",
    ]


def test_crash_after_submit_before_persisting_loses_the_command() -> None:
    """The leader crashes right after ``propose``, before its Ready was persisted or sent: the
    command was never durable anywhere, so it is lost everywhere, even after the restart."""
    net, old = started()
    index, term = net.nodes[old].propose(b"5")
    net.crash(old)  # the Ready with the entry and its AppendEntries was never handled
    new = net.wait_for_leader(among=others(net, old))
    net.restart(old)
    assert net.nodes[old].log.last_index < index
    net.tick(SETTLE)
    assert net.leaders() == [new]

    net.propose(new, b"6")
    net.tick(3)
    assert_not_committed(net, b"5")
    assert_committed(net, b"6", 3)
    # The proposal's slot went to another term: the client learns its command was lost.
    assert net.nodes[new].log.term_at(index) != term
    assert_applied_agree(net)


def test_crash_after_submit_after_sending_commits_through_the_new_leader() -> None:
    """The leader persists and sends the entry, then crashes before any acknowledgement, so it
    never learns the entry is replicated. The followers hold it, so the next leader commits
    it (with its term-start no-op), and the restarted old leader agrees."""
    net, old = started()
    index, _ = net.nodes[old].propose(b"5")
    net.process(old)  # persisted, AppendEntries on the wire
    net.crash(old)
    net.stabilize()  # the followers receive and acknowledge; nobody hears the acks
    assert_not_committed(net, b"5")
    assert all(net.nodes[i].log.last_index == index for i in others(net, old))

    new = net.wait_for_leader(among=others(net, old))
    net.tick(3)
    assert assert_committed(net, b"5", 2) == index
    net.restart(old)
    net.tick(3)
    net.propose(new, b"6")
    net.tick(3)
    assert assert_committed(net, b"5", 3) == index
    assert_committed(net, b"6", 3)
    assert_applied_agree(net)
