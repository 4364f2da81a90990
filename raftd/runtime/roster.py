"""Who the members are, as the runtime needs them: ids, names and addresses.

The core knows members by id. A configuration entry carries, besides the ids the core
reads, every member's name and peer and client addresses (``members``) and the next id to
assign (``next_id``: ids are never reused, so a stale vote or message meant for a removed
member can never be taken by a new one). A cluster that never changed its membership has
no such entry: its members are the ``--cluster`` names with the ids stored at bootstrap.

A peer address given in ``--cluster`` wins over the one in the log for a member this
member knew by the same name and id from the start (a machine may move); a member added
later, a replacement under an old name included, is reached where its entry says. Every
other name in ``--cluster`` is ignored once the log says who the members are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftd.config import Address, ConfigError, NodeConfig, parse_address
from raftd.core import DurableState, EntryKind, Membership, MembershipError, NodeId


@dataclass(frozen=True, slots=True)
class Member:
    id: NodeId
    name: str
    peer: Address
    client: str | None = None


class Roster:
    """The members of the configuration in force here. ``names`` and ``ids`` are updated
    in place, so whoever holds them (spans, the transport) sees every change.

    Members a change removed stay reachable (``known``, and in ``names`` and ``ids``) until
    the change has committed and the leader has stopped telling them of it (``settle``): a
    leader removing itself still leads until the commit, and its followers must keep
    answering it."""

    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        self.names: dict[NodeId, str] = {}
        self.ids: dict[str, NodeId] = {}
        self.members: dict[NodeId, Member] = {}
        self._named = False  # whether a configuration entry named the members
        self.former: dict[NodeId, Member] = {}
        # Members a joining member learned of from their messages before its log named
        # the members (``unsettled``); the next configuration replaces them.
        self._provisional: dict[NodeId, Member] = {}
        self.next_id = 1
        self._listeners: list[Callable[[], None]] = []
        self._bootstrap()

    def _bootstrap(self) -> None:
        config = self._config
        members = {
            node_id: Member(node_id, name, config.members[name])
            for name, node_id in config.node_ids.items()
        }
        self._replace(members, max(members, default=0) + 1)

    def update(self, membership: Membership) -> None:
        """Follow the configuration now in force (call on every change)."""
        extra = membership.extra()
        if "members" not in extra:
            self._bootstrap()
        else:
            self._provisional = {}
            self._named = True
            members = decode_members(extra["members"])
            known_from_start = self._config.node_ids
            for node_id, member in list(members.items()):
                moved = self._config.members.get(member.name)
                same = known_from_start.get(member.name) == node_id
                if same and moved is not None and moved != member.peer:
                    members[node_id] = Member(node_id, member.name, moved, member.client)
            self._replace(members, int(extra.get("next_id", max(members, default=0) + 1)))
        for listener in self._listeners:
            listener()

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def settle(self) -> None:
        """No one talks to the members the configuration in force removed: forget them."""
        if self.former:
            self.former = {}
            self._index()
            for listener in self._listeners:
                listener()

    @property
    def unsettled(self) -> bool:
        """A member that joined and does not know the members yet."""
        return not self._config.bootstrap and not self._named

    def provisional(self, node_id: NodeId, name: str) -> None:
        """A member of --cluster sent a message as ``node_id``: keep a link to it."""
        if node_id in self.known or name not in self._config.members:
            return
        self._provisional[node_id] = Member(node_id, name, self._config.members[name])
        self._index()
        for listener in self._listeners:
            listener()

    @property
    def known(self) -> dict[NodeId, Member]:
        """Everyone to keep a link with: the members, those a pending change removed, and
        those a joining member heard from."""
        return {**self._provisional, **self.former, **self.members}

    def _replace(self, members: dict[NodeId, Member], next_id: int) -> None:
        gone = {i: m for i, m in self.members.items() if i not in members}
        # A removed member replaced under its name or at its address is no longer told of
        # its removal: the new member's process would get those messages, take the first
        # for its invitation, and with it the removed member's id.
        names = {m.name for m in members.values()}
        peers = {m.peer for m in members.values()}
        self.former = {
            i: m
            for i, m in {**self.former, **gone}.items()
            if i not in members and m.name not in names and m.peer not in peers
        }
        self.members = members
        self.next_id = next_id
        self._index()

    def _index(self) -> None:
        known = self.known
        self.names.clear()
        self.names.update({i: m.name for i, m in known.items()})
        self.ids.clear()
        self.ids.update({m.name: i for i, m in known.items()})

    def encode(self, members: dict[NodeId, Member], next_id: int) -> dict[str, Any]:
        """The runtime's fields of a configuration entry naming ``members``."""
        return {
            "members": {
                str(i): {"name": m.name, "peer": str(m.peer), "client": m.client}
                for i, m in sorted(members.items())
            },
            "next_id": next_id,
        }


def decode_members(raw: object) -> dict[NodeId, Member]:
    """The ``members`` field of a configuration entry; MembershipError if malformed."""
    if not isinstance(raw, dict):
        raise MembershipError("members must map ids to names and addresses")
    members: dict[NodeId, Member] = {}
    for key, item in raw.items():
        try:
            node_id = int(key)
            name, peer, client = item["name"], item["peer"], item.get("client")
            if not isinstance(name, str) or not (client is None or isinstance(client, str)):
                raise TypeError("name and client must be strings")
            members[node_id] = Member(node_id, name, parse_address(peer), client)
        except (ValueError, KeyError, TypeError, ConfigError) as exc:
            raise MembershipError(f"member {key!r} is malformed: {exc}") from exc
    return members


def check_configuration(data: bytes) -> Membership:
    """A configuration entry both the core and the roster can use, or MembershipError."""
    membership = Membership.decode(data)
    extra = membership.extra()
    if "members" in extra:
        members = decode_members(extra["members"])
        missing = set(membership.members) - set(members)
        if missing:
            raise MembershipError(f"no name or address for member ids {sorted(missing)}")
    return membership


def configuration_in(state: DurableState) -> Membership | None:
    """The newest configuration a member's durable state holds (None: none, the cluster's
    bootstrap configuration is in force)."""
    for entry in reversed(state.entries):
        if entry.kind is EntryKind.CONFIG:
            return Membership.decode(entry.data)
    if state.snapshot is not None and state.snapshot.meta.config:
        return Membership.decode(state.snapshot.meta.config)
    return None


def member_names(membership: Membership | None) -> dict[NodeId, str] | None:
    """Ids to names of a configuration that names its members (None: one that does not,
    the bootstrap one)."""
    if membership is None or "members" not in membership.extra():
        return None
    return {i: m.name for i, m in decode_members(membership.extra()["members"]).items()}
