"""The runtime's roster of members: whom a member keeps links with as the configuration
changes."""

from __future__ import annotations

from pathlib import Path

from raftd.config import NodeConfig, parse_address
from raftd.core.membership import Membership
from raftd.runtime.roster import Member, Roster


def configuration(roster: Roster, members: dict[int, tuple[str, str]], next_id: int) -> None:
    """Put in force a configuration whose voters are ``members`` (id -> name, peer)."""
    named = {i: Member(i, name, parse_address(peer), None) for i, (name, peer) in members.items()}
    extra = roster.encode(named, next_id)
    roster.update(Membership.of(tuple(members), (), extra))


def test_a_removed_member_replaced_under_its_name_is_no_longer_sent_to(tmp_path: Path) -> None:
    """A removed member is told of its removal for a while (``former``); once a new member
    takes its name and address (wiped and added back), messages for the old id would reach
    the new process, which takes the first message it gets for its invitation, and so the
    old, removed identity (seen in a nemesis run: never promoted)."""
    peers = {"n1": "127.0.0.1:7101", "n2": "127.0.0.1:7102", "n3": "127.0.0.1:7103"}
    config = NodeConfig("n2", {n: parse_address(p) for n, p in peers.items()},
                        parse_address("127.0.0.1:7002"), tmp_path)  # fmt: skip
    roster = Roster(config)
    configuration(roster, {2: ("n2", peers["n2"]), 3: ("n3", peers["n3"])}, next_id=4)
    assert 1 in roster.known  # the removed n1 is still told that it was removed
    back = {2: ("n2", peers["n2"]), 3: ("n3", peers["n3"]), 4: ("n1", peers["n1"])}
    configuration(roster, back, next_id=5)
    assert 1 not in roster.known and roster.known[4].name == "n1"
