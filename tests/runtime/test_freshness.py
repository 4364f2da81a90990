"""The staleness bookkeeping behind ``get --max-staleness`` (see raftd/runtime/freshness)."""

from __future__ import annotations

import math

from raftd.runtime.freshness import Freshness


def test_a_follower_is_current_only_once_it_applied_the_leaders_commit_index() -> None:
    fresh = Freshness()
    assert fresh.age(10.0) is None  # never heard a leader that could vouch for it
    fresh.leader_says(instant=9.0, commit_index=50, applied_index=40)
    assert fresh.age(10.0) is None  # heard it, but is behind: hearing is not being caught up
    fresh.applied(49)
    assert fresh.age(10.0) is None
    fresh.applied(50)
    assert fresh.age(10.0) == 1.0


def test_a_later_point_with_a_lower_requirement_replaces_waiting_ones() -> None:
    fresh = Freshness()
    fresh.leader_says(1.0, 100, 0)
    fresh.leader_says(2.0, 100, 0)
    fresh.leader_says(3.0, 120, 0)
    fresh.applied(100)
    assert fresh.age(5.0) == 3.0  # the point of 2.0, not 1.0
    fresh.applied(120)
    assert fresh.age(5.0) == 2.0


def test_a_leader_is_as_current_as_its_freshest_quorum_of_answers() -> None:
    fresh = Freshness()
    peers = (2, 3, 4, 5)
    fresh.heard_from(2, 8.0)
    fresh.heard_from(3, 9.5)
    assert fresh.leader_point(10.0, peers, quorum=3) == 8.0  # itself, 3 and 2
    assert fresh.leader_point(10.0, peers, quorum=4) == -math.inf  # no third peer yet
    fresh.heard_from(3, 7.0)  # an older answer never moves the point back
    assert fresh.leader_point(10.0, peers, quorum=3) == 8.0
    fresh.forget_answers()  # a new leadership starts from nothing
    assert fresh.leader_point(10.0, peers, quorum=3) == -math.inf
    assert fresh.leader_point(10.0, (), quorum=1) == 10.0


def test_a_deposed_leaders_followers_grow_stale() -> None:
    """A leader cut off from its quorum keeps sending heartbeats to the one follower it still
    reaches, but its point no longer moves, so neither does the follower's."""
    leader, follower = Freshness(), Freshness()
    leader.heard_from(2, 5.0)
    leader.heard_from(3, 5.0)
    for now in (6.0, 7.0, 8.0):
        leader.heard_from(2, now)  # its last follower still answers
        point = leader.leader_point(now, (2, 3, 4, 5), quorum=3)
        follower.leader_says(point, commit_index=1, applied_index=1)
    assert follower.age(8.0) == 3.0
