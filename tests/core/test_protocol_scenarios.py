"""Protocol corner cases, each scripted message by message where the timing matters.

- Figure 8 of the Raft paper: why a leader only commits entries of its own term by counting;
- a delayed duplicate AppendEntries must not cut off newer entries, and a follower commits
  only what an AppendEntries proves;
- pre-vote (with the leader lease) keeps a rejoining node from raising the cluster's term;
- check-quorum makes a leader that lost its majority step down; without it, a deposed leader
  learns the new term from the replies to its own messages;
- fast back-off skips whole terms when a follower is far behind;
- the Ready/advance contract;
- followers know their leader, and forget it when the term moves on;
- a one-node cluster.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from raftd.core import (
    AppendEntries,
    AppendEntriesResponse,
    Config,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    Message,
    NodeId,
    NotLeaderError,
    RaftNode,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from raftd.core.events import (
    AppendRejected,
    BecameCandidate,
    BecameFollower,
    BecameLeader,
    CommitAdvanced,
    ElectionLost,
    ElectionStarted,
    LogTruncated,
    StaleMessageIgnored,
    SteppedDown,
    VoteRefused,
)
from raftd.storage import MemoryStorage
from tests.core.network import (
    Network,
    assert_applied_agree,
    assert_committed,
    audit_persist_before_send,
)

ELECTION_TIMEOUT = 10
SETTLE = 5 * ELECTION_TIMEOUT


def log_terms(net: Network, node_id: NodeId) -> list[int]:
    """The term of each entry of a node's log, from index 1 (a crashed node: its disk)."""
    if node_id in net.nodes:
        log = net.nodes[node_id].log
        return [e.term for e in log.slice(1, log.last_index + 1)]
    return [e.term for e in net.storages[node_id].load().entries]


def role(net: Network, node_id: NodeId) -> Role:
    return net.nodes[node_id].role


def lose(net: Network, where: Callable[[Message], bool]) -> None:
    """The network drops the in-flight messages ``where`` selects."""
    net.send([m for m in net.drop_in_flight() if not where(m)])


def ever_applied(net: Network, node_id: NodeId) -> list[Entry]:
    """Everything a node handed to its state machine, across all its restarts."""
    return [e for ready in net.readies[node_id] for e in ready.committed]


# -------------------------------------------------------------------- Figure 8


def figure_8_up_to_c() -> Network:
    """Figure 8 (a)-(c) of the Raft paper, scripted message by message on five nodes.

    Pre-vote and check-quorum are off: the paper's script has candidates win right away and
    voters that never ignore a candidate because of a leader lease. One entry per
    AppendEntries lets S1 send its term-2 entry without its term-4 entry. Each new leader's
    no-op plays the paper's entry for that term: (2, t2) is S1's no-op of term 2, (2, t3) is
    S5's of term 3 and (3, t4) is S1's of term 4.

    Where it departs from the figure: the leader of term 4 must *know* the term-2 entry is on
    a majority for the commit rule to be what is tested, so S2 acknowledges it in term 4; the
    only AppendEntries S1 can send S2 then also carries (3, t4), so S2 holds that entry too.
    Still (3, t4) is on two nodes only, and the (2, t2) on three.

    Returns the cluster at (c), with S1's AppendEntries carrying (3, t4) to S3 in flight.
    """
    net = Network(5, pre_vote=False, check_quorum=False, max_entries_per_append=1)
    net.elect(2)  # term 1: S2 leads; its no-op (1, t1) reaches everyone
    net.tick(3)
    assert all(log_terms(net, i) == [1] for i in net.ids)

    # (a) S1 leads term 2; its entry (2, t2) reaches S2 only.
    net.nodes[1].campaign()
    net.deliver()  # everyone grants
    net.deliver()  # S1 wins and sends (2, t2)
    assert role(net, 1) is Role.LEADER and net.nodes[1].current_term == 2
    net.deliver(lambda m: m.dst == 2)
    net.drop_in_flight()  # the copies for S3-S5 and S2's acknowledgement are lost
    assert [log_terms(net, i) for i in net.ids] == [[1, 2], [1, 2], [1], [1], [1]]

    # (b) S1 crashes; S5 wins term 3 with votes from S3, S4 and itself (S2's log is newer),
    # appends (2, t3) and crashes before sending it.
    net.crash(1)
    net.nodes[5].campaign()
    net.deliver()
    net.deliver()
    assert BecameLeader(3, (3, 4, 5)) in net.events[5]
    assert VoteRefused(3, 5, False, "log_behind") in net.events[2]
    net.crash(5)
    net.drop_in_flight()
    assert log_terms(net, 5) == [1, 3]

    # (c) S1 restarts. In term 3 S3 and S4 already voted (for S5); in term 4 S1 wins.
    net.restart(1)
    net.nodes[1].campaign()
    net.deliver()
    net.deliver()
    assert role(net, 1) is Role.CANDIDATE
    assert VoteRefused(3, 1, False, "already_voted") in net.events[3]
    net.nodes[1].campaign()
    net.deliver()
    net.deliver()
    assert BecameLeader(4, (1, 2, 3)) in net.events[1]

    # S1 appended (3, t4) and probes everyone with it. S2 takes it; S3 lacks index 2 and
    # refuses; S4's copy is lost. S1 backs S3 off and sends it (2, t2) alone.
    lose(net, lambda m: m.dst in (4, 5))
    net.deliver()  # S2 appends (3, t4); S3 refuses
    net.deliver()  # S1 learns both; sends (2, t2) to S3
    net.deliver()  # S3 appends (2, t2)
    net.deliver()  # S1 learns S3 matches index 2; sends (3, t4) to S3
    (pending,) = net.in_flight
    assert isinstance(pending, AppendEntries) and pending.dst == 3
    assert pending.entries == (Entry(3, 4, b"", EntryKind.NOOP),)

    assert [log_terms(net, i) for i in net.ids] == [[1, 2, 4], [1, 2, 4], [1, 2], [1], [1, 3]]
    s1 = net.nodes[1]
    assert (s1.progress(2).match_index, s1.progress(3).match_index) == (3, 2)
    # S1 knows (2, t2) is on S1, S2 and S3, a majority, yet does not commit it: it is not an
    # entry of the current term, and counting replicas only commits those (section 5.4.2).
    # (Having restarted, S1 does not even know index 1 is committed: commit indexes are not
    # durable, and it can learn nothing from entries of earlier terms.)
    assert s1.commit_index == 0
    assert all(n.commit_index < 2 for n in net.nodes.values())
    return net


def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed_and_can_be_overwritten() -> None:
    """(d): S1 crashes before its term-4 entry reaches a majority. S5, whose log ends in term
    3, can then be elected and overwrite index 2 everywhere, which is only safe because the
    term-2 entry was never committed: no node applied it."""
    net = figure_8_up_to_c()
    net.crash(1)
    net.drop_in_flight()  # (3, t4) never reaches S3

    net.restart(5)
    net.nodes[5].campaign()  # term 4: everyone already voted for S1
    net.stabilize()
    assert ElectionLost(4, False, (5,), (2, 3, 4)) in net.events[5]
    net.nodes[5].campaign()  # term 5: S3 and S4 grant; S2 holds a term-4 entry and refuses
    net.stabilize()
    assert BecameLeader(5, (3, 4, 5)) in net.events[5]
    assert VoteRefused(5, 5, False, "log_behind") in net.events[2]
    net.tick(3)

    for node_id in (2, 3, 4, 5):
        assert log_terms(net, node_id) == [1, 3, 5]
    assert LogTruncated(2, 3) in net.events[2]
    assert LogTruncated(2, 3) in net.events[3]

    net.restart(1)
    net.tick(3)
    assert log_terms(net, 1) == [1, 3, 5]
    assert LogTruncated(2, 3) in net.events[1]
    for node_id in net.ids:
        applied = [(e.index, e.term) for e in ever_applied(net, node_id)]
        assert (2, 2) not in applied, f"S{node_id} applied the overwritten entry"
        assert applied[-2:] == [(2, 3), (3, 5)]


def test_figure_8_a_current_term_entry_on_a_majority_commits_the_old_one_too() -> None:
    """(e): S1 gets (3, t4) onto a majority before crashing. That commits it and, with it,
    (2, t2). Now S5 cannot be elected (S2 and S3 hold a newer log), so the committed entries
    survive whatever happens next."""
    net = figure_8_up_to_c()
    net.deliver()  # S3 appends (3, t4)
    net.deliver()  # S1 learns it
    s1 = net.nodes[1]
    assert CommitAdvanced(0, 3) in net.events[1]
    assert [(e.index, e.term) for e in net.applied[1]] == [(1, 1), (2, 2), (3, 4)]

    net.crash(1)
    net.drop_in_flight()
    net.restart(5)
    net.nodes[5].campaign()  # term 4: refused, everyone voted for S1
    net.stabilize()
    net.nodes[5].campaign()  # term 5: only S4 grants
    net.stabilize()
    assert net.nodes[5].role is Role.CANDIDATE
    assert VoteRefused(5, 5, False, "log_behind") in net.events[2]
    assert VoteRefused(5, 5, False, "log_behind") in net.events[3]

    new = net.wait_for_leader(among=(2, 3, 4, 5))
    assert new in (2, 3)
    net.restart(1)
    net.tick(SETTLE)
    for node_id in net.ids:
        assert log_terms(net, node_id)[:3] == [1, 2, 4]
    assert s1 is not net.nodes[1]  # the restarted S1 re-applied from its durable log
    assert_applied_agree(net)


# ------------------------------------------------------- duplicate AppendEntries


def test_a_delayed_duplicate_append_never_truncates_newer_entries() -> None:
    """An AppendEntries for entry "b" is copied by the network and the copy arrives after
    "c" and "d" were appended. The follower already has every entry it carries, so it must
    keep c and d (truncating would lose entries it acknowledged, possibly committed ones),
    and it acknowledges only what that message proves: prev_log_index + len(entries)."""
    net = Network(3)
    net.elect(1)
    net.propose(1, b"a")
    net.nodes[1].propose(b"b")
    net.process(1)
    first_copy = net.drop_in_flight()
    (old,) = [m for m in first_copy if isinstance(m, AppendEntries) and m.dst == 2]
    assert [e.data for e in old.entries] == [b"b"]
    net.send(first_copy)
    net.stabilize()
    net.propose(1, b"c")
    net.propose(1, b"d")
    net.tick(3)
    follower = net.nodes[2]
    log_before = follower.log.slice(1, follower.log.last_index + 1)
    commit_before = follower.commit_index
    assert [e.data for e in log_before][-3:] == [b"b", b"c", b"d"]
    assert commit_before == follower.log.last_index

    net.send([old])
    net.stabilize()
    assert follower.log.slice(1, follower.log.last_index + 1) == log_before
    assert follower.commit_index == commit_before
    assert net.events_of(2, LogTruncated) == []
    replies = [m for m in net.delivered if isinstance(m, AppendEntriesResponse) and m.src == 2]
    assert replies[-1].success
    assert replies[-1].match_index == old.prev_log_index + len(old.entries)
    assert replies[-1].match_index < log_before[-1].index
    assert net.nodes[1].progress(2).match_index == log_before[-1].index  # not moved back


def follower_with_unverified_tail() -> RaftNode:
    """Node 1 restarted in term 2 holding [1:t1, 2:t2, 3:t2, 4:t2], of which only index 2 is
    known to match any later leader: 3 and 4 may be leftovers of a leader that lost."""
    entries = (Entry(1, 1), Entry(2, 2), Entry(3, 2), Entry(4, 2))
    durable = DurableState(HardState(2, None), entries)
    return RaftNode(Config(1, (1, 2, 3)), random.Random(1), durable)


def test_a_follower_commits_only_what_an_append_proves() -> None:
    """Figure 2, AppendEntries rule 5: commitIndex = min(leaderCommit, index of last new
    entry). A term-3 leader whose commit index is 4 sends an AppendEntries proving the log up
    to index 2 only; entries 3 and 4 of the follower may differ from the leader's, so
    committing them would apply entries that the cluster never chose."""
    node = follower_with_unverified_tail()
    node.step(AppendEntries(3, 2, 1, 1, 1, (Entry(2, 2),), leader_commit=4))
    ready = node.ready()
    assert node.commit_index == 2
    assert [e.index for e in ready.committed] == [1, 2]
    assert ready.messages == (AppendEntriesResponse(3, 1, 2, True, match_index=2),)


def test_a_heartbeat_never_commits_beyond_the_followers_log() -> None:
    """A heartbeat's commit index (which the leader caps at what it knows the follower holds)
    is adopted only as far as the follower's log reaches: commit_index <= last_index always."""
    node = RaftNode(Config(1, (1, 2, 3)), random.Random(1))
    entries = tuple(Entry(i, 1) for i in range(1, 5))
    node.step(AppendEntries(1, 2, 1, 0, 0, entries, leader_commit=0))
    node.advance(node.ready())
    node.step(Heartbeat(1, 2, 1, leader_commit=9))
    assert node.commit_index == 4
    assert [e.index for e in node.ready().committed] == [1, 2, 3, 4]


# ------------------------------------------------------------------ pre-vote


def test_with_pre_vote_a_rejoining_follower_does_not_raise_the_term() -> None:
    """A follower cut off for 120 ticks keeps failing pre-votes, so its term never moves; when
    it returns the leader and the term are unchanged: no disruption."""
    net = Network(3)
    net.elect(1)
    net.tick(3)
    term = net.nodes[1].current_term
    net.isolate(3)
    for _ in range(120):
        net.tick()
        assert net.nodes[3].current_term == term
    attempts = net.events_of(3, ElectionStarted)
    assert len(attempts) >= 5
    assert all(e.pre_vote and e.term == term + 1 for e in attempts)

    net.heal()
    net.tick(SETTLE)
    assert net.leaders() == [1]
    assert all(n.current_term == term for n in net.nodes.values())
    assert net.nodes[3].leader_id == 1
    assert net.events_of(1, SteppedDown) == []


def test_a_rejoining_nodes_pre_vote_is_refused_while_the_leader_is_alive() -> None:
    """Pre-vote alone is not enough: the node below comes back with a log as good as anyone's,
    and its pre-vote reaches the others before the leader's next heartbeat reaches it. Nodes
    that heard from the leader within an election timeout refuse ("leader_lease"), so it
    cannot start a real election and the term stays put (thesis section 9.6)."""
    net = Network(3)
    net.elect(1)
    net.tick(3)
    term = net.nodes[1].current_term
    net.isolate(3)
    net.run_until(lambda: bool(net.events_of(3, ElectionStarted)))
    assert net.nodes[3].role is Role.PRE_CANDIDATE  # its pre-vote requests are on the wire
    net.heal()
    net.stabilize()
    assert VoteRefused(term + 1, 3, True, "leader_lease") in net.events[2]
    assert VoteRefused(term + 1, 3, True, "leader_lease") in net.events[1]
    net.tick(SETTLE)
    assert net.leaders() == [1]
    assert all(n.current_term == term for n in net.nodes.values())


def test_without_pre_vote_a_rejoining_follower_forces_a_new_term() -> None:
    """The contrast: without pre-vote the lonely follower campaigns its term up, and its
    return makes the leader step down to that term; the cluster ends in a higher term."""
    net = Network(3, pre_vote=False)
    net.elect(1)
    net.tick(3)
    term = net.nodes[1].current_term
    net.isolate(3)
    net.tick(120)
    lonely_term = net.nodes[3].current_term
    assert lonely_term > term + 5

    net.heal()
    net.tick(SETTLE)
    assert SteppedDown(lonely_term, "higher_term") in net.events[1]
    leader = net.leader()
    assert net.nodes[leader].current_term > lonely_term
    assert all(n.current_term == net.nodes[leader].current_term for n in net.nodes.values())


# -------------------------------------------------------------- check-quorum


@pytest.mark.parametrize("cut_at", range(ELECTION_TIMEOUT))
def test_leader_cut_off_from_the_majority_steps_down(cut_at: int) -> None:
    """A leader in the minority side of a partition ({1, 5} against {2, 3, 4}) gives up
    within two election timeouts, wherever in its check-quorum window the cut falls, so
    clients stop talking to a leader that cannot commit."""
    net = Network(5)
    net.elect(1)
    net.tick(cut_at)
    term = net.nodes[1].current_term
    net.partition((1, 5), (2, 3, 4))
    ticks = 0
    while net.nodes[1].role is Role.LEADER:
        net.tick()
        ticks += 1
        assert ticks <= 2 * ELECTION_TIMEOUT, "the cut-off leader is still leading"
    assert SteppedDown(term, "check_quorum") in net.events[1]
    assert net.nodes[1].current_term == term  # stepping down alone does not change the term
    with pytest.raises(NotLeaderError):
        net.nodes[1].propose(b"x")


def test_without_check_quorum_a_cut_off_leader_keeps_leading() -> None:
    """The contrast: without check-quorum the minority leader never notices. It keeps
    accepting proposals that can never commit, while the majority elects another leader."""
    net = Network(5, check_quorum=False)
    net.elect(1)
    net.tick(3)
    term = net.nodes[1].current_term
    net.partition((1, 5), (2, 3, 4))
    net.tick(10 * ELECTION_TIMEOUT)
    assert net.nodes[1].role is Role.LEADER
    assert net.nodes[1].current_term == term
    assert net.events_of(1, SteppedDown) == []
    net.propose(1, b"doomed")
    other = net.leader()
    assert other in (2, 3, 4)
    net.propose(other, b"fine")
    net.tick(3)
    assert net.committed_on(b"doomed") == {}
    assert_committed(net, b"fine", 3)


@pytest.mark.parametrize("message", ["append", "heartbeat"])
def test_a_deposed_leader_learns_the_new_term_from_the_replies_to_its_messages(
    message: str,
) -> None:
    """Without check-quorum a cut-off leader keeps its role. When the partition heals, the
    first AppendEntries (or heartbeat) it sends is answered with the newer term, which makes
    it step down at once, without waiting for any election timeout."""
    net = Network(3, check_quorum=False)
    net.elect(1)
    net.tick(3)
    old_term = net.nodes[1].current_term
    net.isolate(1)
    new = net.wait_for_leader(among=(2, 3))
    new_term = net.nodes[new].current_term
    assert new_term > old_term
    assert role(net, 1) is Role.LEADER

    net.heal()
    if message == "append":
        net.nodes[1].propose(b"stale")
        kind = "AppendEntries"
    else:
        while not any(isinstance(m, Heartbeat) for m in net.in_flight):
            net.nodes[1].tick()
            net.process(1)
        kind = "Heartbeat"
    net.deliver(lambda m: m.src == 1)  # the followers answer with their term ...
    net.deliver(lambda m: m.dst == 1)  # ... and node 1 reads the answers
    assert any(
        e.kind == kind and e.msg_term == old_term for e in net.events_of(new, StaleMessageIgnored)
    )
    assert SteppedDown(new_term, "higher_term") in net.events[1]
    assert role(net, 1) is Role.FOLLOWER


# -------------------------------------------------------------- fast back-off


def test_fast_back_off_skips_whole_terms() -> None:
    """Five nodes. Leader 1 is cut off with 20 uncommitted entries of its term while the other
    four go through more leaders and terms, 20 entries per leader. When 1 returns it lacks
    over 60 entries and holds 20 conflicting ones, yet it needs only a few rejected probes,
    each skipping the whole gap or a whole term, not one round trip per entry."""
    net = Network(5, max_entries_per_append=16)
    net.elect(1)
    for i in range(5):
        net.propose(1, f"base{i}".encode())
    net.tick(3)
    net.isolate(1)
    for i in range(20):
        net.propose(1, f"stray{i}".encode())
    net.tick(3 * ELECTION_TIMEOUT)  # 1 steps down (check-quorum) and keeps its stray tail

    rest = [2, 3, 4, 5]
    for round_ in range(3):
        leader = net.wait_for_leader(among=rest)
        for i in range(20):
            net.propose(leader, f"r{round_}-{i}".encode())
        net.tick(3)
        # Move leadership on: cut the leader off until the others replace it, then mend.
        net.isolate(leader)
        net.wait_for_leader(among=[n for n in rest if n != leader])
        net.heal()
        net.isolate(1)
        net.tick(SETTLE)

    leader = net.leader()
    leader_log = net.nodes[leader].log
    stale_log = net.nodes[1].log
    diverge = next(
        i
        for i in range(1, stale_log.last_index + 1)
        if stale_log.term_at(i) != leader_log.term_at(i)
    )
    missing = leader_log.last_index - (diverge - 1)
    assert missing >= 60
    assert len({leader_log.term_at(i) for i in range(diverge, leader_log.last_index + 1)}) >= 3

    rejections_before = len(net.events_of(1, AppendRejected))
    net.heal()
    net.tick(SETTLE)
    rejections = len(net.events_of(1, AppendRejected)) - rejections_before
    assert net.nodes[1].log.slice(1, 10_000) == leader_log.slice(1, 10_000)
    assert 1 <= rejections <= 4  # here: one "too short", one naming the stale term
    assert rejections * 10 < missing
    assert [e.from_index for e in net.events_of(1, LogTruncated)] == [diverge]
    assert_applied_agree(net)


# -------------------------------------------------------------- Ready contract


def test_a_ready_carries_what_must_be_durable_before_its_messages() -> None:
    """A leader's proposal comes back as a Ready whose entries include the new entry and
    whose messages replicate that very entry; the follower's Ready holds the entry too and
    acknowledges no more than it persists in that same Ready."""
    net = Network(3)
    net.elect(1)
    net.tick(3)
    index, term = net.nodes[1].propose(b"x")
    net.process(1)
    ready = net.readies[1][-1]
    assert ready.entries == (Entry(index, term, b"x"),)
    appends = [m for m in ready.messages if isinstance(m, AppendEntries)]
    assert sorted(m.dst for m in appends) == [2, 3]
    assert all(m.entries == ready.entries for m in appends)
    assert net.storages[1].last_index == index

    net.deliver(lambda m: m.dst == 2)
    follower_ready = net.readies[2][-1]
    assert follower_ready.entries == (Entry(index, term, b"x"),)
    (ack,) = follower_ready.messages
    assert isinstance(ack, AppendEntriesResponse)
    assert ack.success and ack.match_index == index
    assert net.storages[2].last_index == index


def test_every_ready_persists_before_it_sends_through_elections_partitions_and_crashes() -> None:
    """Audit persist-before-send on every Ready of a busy, deterministic history, and check
    that committed entries reach each state machine in index order with no gap or repeat."""
    net = Network(5, seed=7, max_entries_per_append=4)
    net.ready_observers.append(audit_persist_before_send)

    def applies_in_order(node_id: NodeId, ready: Ready, storage: MemoryStorage) -> None:
        if ready.committed:
            indexes = [e.index for e in ready.committed]
            first = net.nodes[node_id].last_applied + 1
            assert indexes == list(range(first, first + len(indexes))), indexes

    net.ready_observers.append(applies_in_order)
    leader = net.wait_for_leader()
    for step in range(12):
        for i in range(3):
            net.propose(leader, f"{step}-{i}".encode())
        victim = net.ids[(leader + step) % 5]
        if step % 3 == 0:
            net.isolate(leader)
        elif step % 3 == 1:
            net.crash(victim)
        net.tick(2 * ELECTION_TIMEOUT)
        net.heal()
        for node_id in net.ids:
            if node_id not in net.nodes:
                net.restart(node_id)
        leader = net.wait_for_leader()
    net.tick(SETTLE)
    assert len(net.readies[1]) > 50
    assert_applied_agree(net)
    final = net.nodes[net.leader()]
    assert all(n.commit_index == final.commit_index for n in net.nodes.values())


def test_advance_requires_the_ready_that_ready_returned() -> None:
    """advance() with an equal-looking but different Ready, or twice with the same one, is a
    runtime bug and raises instead of silently marking unhandled work as done."""
    node = RaftNode(Config(1, (1, 2, 3), pre_vote=False), random.Random(1))
    node.campaign()
    ready = node.ready()
    assert ready.hard_state == HardState(1, 1)
    impostor = Ready(ready.hard_state, ready.entries, ready.messages, ready.committed, ())
    with pytest.raises(RuntimeError):
        node.advance(impostor)
    node.advance(ready)
    with pytest.raises(RuntimeError):
        node.advance(ready)
    assert not node.has_ready()


def test_no_input_is_accepted_between_ready_and_advance() -> None:
    """Between ready() and advance() the node refuses every input (and a second ready()), so
    nothing can slip into a bundle after the runtime started persisting it."""
    net = Network(3)
    net.elect(1)
    net.tick(3)
    node = net.nodes[1]
    node.propose(b"x")
    ready = node.ready()
    heartbeat = Heartbeat(node.current_term, 2, 1, 0)
    inputs: list[Callable[[], object]] = [
        node.tick,
        node.campaign,
        lambda: node.propose(b"y"),
        lambda: node.step(heartbeat),
        node.ready,
    ]
    for give in inputs:
        with pytest.raises(RuntimeError, match=r"between ready\(\) and advance\(\)"):
            give()
    assert node.log.last_index == ready.entries[-1].index  # "y" was not appended
    node.advance(ready)
    node.propose(b"y")  # accepted again


# ------------------------------------------------------------------ leader_id


def test_a_follower_knows_its_leader_and_forgets_it_when_the_term_moves_on() -> None:
    """Followers learn the leader from its messages and name it when refusing proposals. A
    cut-off leader is still named for a while (nothing proves it gone yet); once the term
    changes, and until the new leader speaks, leader_id is None, never the stale leader."""
    net = Network(3)
    net.elect(1)
    net.tick(3)
    term = net.nodes[1].current_term
    assert net.nodes[2].leader_id == 1 and net.nodes[3].leader_id == 1
    assert BecameFollower(term, 1) in net.events[2]

    net.isolate(1)
    net.tick(ELECTION_TIMEOUT // 2)
    assert net.nodes[2].leader_id == 1

    def term_moved() -> bool:
        return any(net.nodes[i].current_term > term for i in (2, 3))

    net.run_until(term_moved)
    moved = [i for i in (2, 3) if net.nodes[i].current_term > term]
    assert all(net.nodes[i].leader_id is None for i in moved)

    new = net.wait_for_leader(among=(2, 3))
    net.tick(3)
    other = 5 - new
    assert net.nodes[other].leader_id == new
    with pytest.raises(NotLeaderError) as refused:
        net.nodes[other].propose(b"x")
    assert refused.value.leader_id == new

    net.heal()
    net.tick(SETTLE)
    assert net.nodes[1].leader_id == new


# ------------------------------------------------------------ one-node cluster


def test_a_single_node_cluster_elects_itself_and_commits_alone() -> None:
    """With no peers a node is its own majority: it wins on its first timeout and commits a
    proposal as soon as it is durable; after a crash it does so again and replays its log."""
    net = Network(1)
    assert net.wait_for_leader() == 1
    assert net.nodes[1].current_term == 1
    index, _ = net.propose(1, b"x")
    assert net.commands(1) == [b"x"]
    assert net.nodes[1].commit_index == index

    net.crash(1)
    net.restart(1)
    assert net.nodes[1].role is Role.FOLLOWER
    net.wait_for_leader()
    assert net.nodes[1].current_term == 2
    net.propose(1, b"y")
    assert net.commands(1) == [b"x", b"y"]


def test_a_pre_vote_grant_delayed_from_an_earlier_round_is_not_counted() -> None:
    """Node 3 pre-votes twice in one term. Node 2's grant from the first round arrives during
    the second, when node 2 may since have found a leader and would refuse: counting it
    would let a single fresh grant (node 1's) plus a stale one start a real election."""
    net = Network(3)
    node = net.nodes[3]
    node.campaign()
    net.deliver(lambda m: isinstance(m, RequestVote))  # both peers grant round one ...
    late = net.drop_in_flight()  # ... but their replies are delayed
    replies = [m for m in late if isinstance(m, RequestVoteResponse)]
    assert len(replies) == len(late)
    assert sorted((m.src, m.vote_granted, m.pre_vote) for m in replies) == [
        (1, True, True),
        (2, True, True),
    ]
    node.campaign()  # round two of the same term; its requests are lost
    net.process(3)
    net.drop_in_flight()
    net.send(late)
    net.stabilize()
    assert node.role is Role.PRE_CANDIDATE
    assert node.current_term == 0
    assert net.events_of(3, BecameCandidate) == []


def test_a_leader_never_grants_a_pre_vote_at_any_tick_of_its_lease() -> None:
    """etcd's leader ignores every (pre-)vote of a higher term while it holds check-quorum;
    ours fell outside its own lease for the last heartbeat interval of each election timeout
    and granted one there. Probe every tick of two full timeouts."""
    net = Network(3)
    leader = net.elect(1)
    term = leader.current_term
    for tick in range(2 * leader.config.election_timeout_ticks):
        net.tick()
        net.stabilize()
        assert leader.role is Role.LEADER
        leader.step(RequestVote(term + 1, 3, 1, leader.log.last_index, leader.log.last_term, True))
        ready = leader.ready()
        leader.advance(ready)
        granted = [m for m in ready.messages if isinstance(m, RequestVoteResponse)]
        assert granted == [], f"tick {tick}: the leader answered {granted}"
        assert VoteRefused(term + 1, 3, True, "leader_lease") in ready.events
