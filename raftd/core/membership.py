"""Who is in the cluster: voters and learners, changed through the log one voter at a time.

The Raft dissertation (section 4.1) changes the configuration one server at a time: any two
majorities of configurations that differ by one voter overlap, so no joint consensus is
needed. Its rules, all kept here and in ``RaftNode``:

- a server uses the newest configuration in its log, committed or not, from the moment the
  entry is appended; if the entry is cut from the log (a conflicting suffix), the one before
  it is in force again;
- a leader proposes a change only once the previous one is committed, and only once it has
  committed an entry of its own term (the fix to the single-server algorithm published on
  raft-dev in 2015: without it a change from an earlier term that never committed can be
  overwritten while a new leader's change commits, and two disjoint majorities result);
- a leader that is not in the new configuration manages the cluster until the change
  commits, without counting itself in majorities, then steps down.

Learners (non-voting members) receive the log and snapshots but never vote, never count
towards a majority and never campaign. A learner becomes a voter by a change like any other.

A configuration entry's data is JSON: ``voters`` and ``learners`` are for the core; any other
field (the runtime's names and addresses) is carried along untouched, so the state of the
cluster's membership, names included, lives in the log and in snapshots.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from raftd.core.types import NodeId


class MembershipError(ValueError):
    """A configuration entry or a requested change that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Membership:
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
    # The entry's data as written (the runtime's part included); b"" for a configuration
    # that never was in the log (the one a cluster was bootstrapped with).
    data: bytes = b""

    @classmethod
    def of(
        cls,
        voters: Iterable[NodeId],
        learners: Iterable[NodeId] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> Membership:
        """A configuration with its entry data encoded (``extra``: the runtime's fields)."""
        voter_ids, learner_ids = tuple(sorted(set(voters))), tuple(sorted(set(learners)))
        if set(voter_ids) & set(learner_ids):
            raise MembershipError(f"{set(voter_ids) & set(learner_ids)} both voter and learner")
        body = {**(extra or {}), "voters": list(voter_ids), "learners": list(learner_ids)}
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return cls(voter_ids, learner_ids, data)

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        try:
            body = json.loads(data)
            voters, learners = body["voters"], body.get("learners", [])
            ids = [*voters, *learners]
            if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
                raise MembershipError("member ids must be positive integers")
        except (ValueError, KeyError, TypeError) as exc:
            raise MembershipError(f"unreadable configuration entry: {exc}") from exc
        if len(set(ids)) != len(ids):
            raise MembershipError(f"a member is listed twice in {data!r}")
        return cls(tuple(sorted(voters)), tuple(sorted(learners)), bytes(data))

    @property
    def members(self) -> tuple[NodeId, ...]:
        return tuple(sorted({*self.voters, *self.learners}))

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def extra(self) -> dict[str, Any]:
        """The runtime's fields of the entry (empty for a bootstrap configuration)."""
        if not self.data:
            return {}
        body: dict[str, Any] = json.loads(self.data)
        body.pop("voters", None)
        body.pop("learners", None)
        return body

    def check_step_from(self, current: Membership) -> None:
        """Refuse a change that adds or removes more than one voter at once, or leaves none."""
        if not self.voters:
            raise MembershipError("a configuration needs at least one voter")
        changed = set(self.voters) ^ set(current.voters)
        if len(changed) > 1:
            raise MembershipError(
                f"voters {list(current.voters)} -> {list(self.voters)} changes "
                f"{len(changed)} voters; change one voter at a time"
            )
