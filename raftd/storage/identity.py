"""Who a data directory belongs to: its member's name, its cluster, and every member's id.

The core knows members by integer ids, and a vote is stored as one. Those ids were once
derived at every start from the sorted ``--cluster`` names, so editing ``--cluster`` (adding
``n0``, replacing a member) silently renumbered everyone and turned a stored vote into a
vote for someone else: two leaders in one term. Now the ids are assigned once, when a
member first starts in an empty directory (bootstrap: still the sorted positions, so every
member of a new cluster assigns the same ones without talking), and stored here with the
member's name and its cluster's id. Every later start checks ``--id``, ``--cluster-id`` and
the names in ``--cluster`` against this file and refuses, saying why, when they disagree.

A data directory written before this file existed (a log but no identity) had exactly the
sorted-position ids, so it is adopted under the names ``--cluster`` gives now.

Once the membership has changed, the configuration in the log (or a snapshot) says who the
members are: ``--cluster`` then only gives addresses, and names it lists that the
configuration lacks (or the reverse) are reported, not obeyed. A member that joined an
existing cluster (``--join``) records ``bootstrap: false`` and only the ids it was told:
it never takes ``--cluster`` for a configuration of its own.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from raftd.core import NodeId
from raftd.storage.base import StorageError
from raftd.storage.fs import FileSystem

IDENTITY_NAME = "member.json"
FORMAT = 1


class IdentityMismatch(Exception):
    """The flags name another member, cluster or membership than the directory holds."""


class IdentityDamaged(StorageError):
    """The identity file cannot be read: refusing is safer than guessing the ids."""


@dataclass(frozen=True, slots=True)
class MemberIdentity:
    cluster_id: str
    name: str
    ids: dict[str, NodeId]  # every member's name to its id in the core
    # True: ``ids`` are the members a new cluster was bootstrapped with. False: this member
    # joined an existing cluster; ``ids`` are only those it was told (itself included).
    bootstrap: bool = True
    # The index of the configuration that removed this member, once it learned of it: the
    # directory then never serves again (a new member starts from an empty one).
    removed_at: int | None = None

    def encode(self) -> bytes:
        body = {"format": FORMAT, "cluster_id": self.cluster_id, "name": self.name}
        full = {**body, "bootstrap": self.bootstrap, "members": self.ids}
        if self.removed_at is not None:
            full["removed_at"] = self.removed_at
        return (json.dumps(full, indent=2) + "\n").encode()


def bootstrap_ids(names: Iterable[str]) -> dict[str, NodeId]:
    """The ids of a new cluster's members: their sorted positions, from 1, which every
    member derives alike from the same ``--cluster``."""
    return {name: i + 1 for i, name in enumerate(sorted(names))}


def decode(content: bytes, where: str) -> MemberIdentity:
    try:
        raw = json.loads(content)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format') if isinstance(raw, dict) else raw!r}")
        cluster_id, name, members = raw["cluster_id"], raw["name"], raw["members"]
        if not (isinstance(cluster_id, str) and isinstance(name, str)):
            raise ValueError("cluster_id and name must be strings")
        if not isinstance(members, dict) or name not in members:
            raise ValueError("members must map names to ids, this member's included")
        ids = dict(members)
        if not all(isinstance(i, int) and i > 0 for i in ids.values()):
            raise ValueError("member ids must be positive integers")
        if len(set(ids.values())) != len(ids):
            raise ValueError("two members share an id")
        bootstrap = raw.get("bootstrap", True)
        if not isinstance(bootstrap, bool):
            raise ValueError("bootstrap must be true or false")
        removed_at = raw.get("removed_at")
        if removed_at is not None and (type(removed_at) is not int or removed_at < 1):
            raise ValueError("removed_at must be a log index")
    except (ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        raise IdentityDamaged(
            f"{where} is damaged ({exc}); refusing to start rather than guess who the "
            "members are. Restore the file from a backup or another copy of this member"
        ) from exc
    return MemberIdentity(cluster_id, name, ids, bootstrap, removed_at)


def record_joined(
    fs: FileSystem, data_dir: Path, cluster_id: str, ids: dict[str, NodeId], name: str
) -> MemberIdentity:
    """Write the identity of a member that was added to an existing cluster."""
    identity = MemberIdentity(cluster_id, name, dict(ids), bootstrap=False)
    fs.create(data_dir / IDENTITY_NAME, identity.encode())
    return identity


def record_removed(fs: FileSystem, data_dir: Path, index: int) -> None:
    """This member learned that the configuration at ``index`` removed it."""
    stored = load(fs, data_dir)
    if stored is not None and stored.removed_at is None:
        removed = MemberIdentity(
            stored.cluster_id, stored.name, stored.ids, stored.bootstrap, index
        )
        fs.create(data_dir / IDENTITY_NAME, removed.encode())


def load(fs: FileSystem, data_dir: Path) -> MemberIdentity | None:
    path = data_dir / IDENTITY_NAME
    return decode(fs.read(path), str(path)) if fs.exists(path) else None


def reconcile(
    fs: FileSystem,
    data_dir: Path,
    *,
    name: str,
    cluster_id: str,
    names: Iterable[str],
    has_history: bool,
    configured: Collection[str] | None = None,
) -> tuple[MemberIdentity, str | None]:
    """The stored identity, checked against the flags; written first if the directory has
    none. ``configured``: the member names of the configuration in the log, if it has one.
    Returns it with a line to log (it was just written, or ``--cluster`` disagrees with the
    configuration in the log and is used for addresses only), else None."""
    path = data_dir / IDENTITY_NAME
    listed = sorted(names)
    if fs.exists(path):
        stored = decode(fs.read(path), str(path))
        _check(stored, name, cluster_id, listed if configured is None else None, path)
        if configured is not None and sorted(configured) != listed:
            return stored, (
                f"--cluster names {', '.join(listed)}; the configuration in the log has "
                f"{', '.join(sorted(configured))}: --cluster only gives peer addresses now"
            )
        return stored, None
    identity = MemberIdentity(cluster_id, name, bootstrap_ids(listed))
    fs.create(path, identity.encode())
    why = (
        "recorded this member's identity for a data directory written before identities "
        "were stored (ids as before: the sorted --cluster names)"
        if has_history
        else "bootstrapped a new member: ids assigned from the sorted --cluster names"
    )
    return identity, why


def _check(
    stored: MemberIdentity, name: str, cluster_id: str, listed: list[str] | None, path: Path
) -> None:
    if stored.cluster_id != cluster_id:
        raise IdentityMismatch(
            f"{path.parent} belongs to cluster {stored.cluster_id!r}, not {cluster_id!r} "
            "(--cluster-id): use that cluster's id, or an empty directory for a new member"
        )
    if stored.name != name:
        raise IdentityMismatch(
            f"{path.parent} holds member {stored.name!r}, not {name!r} (--id): one member's "
            "log and votes must never run under another member's name"
        )
    if listed is not None and stored.bootstrap and sorted(stored.ids) != listed:
        raise IdentityMismatch(
            f"--cluster names {', '.join(listed)}, but this member's cluster has "
            f"{', '.join(sorted(stored.ids))} ({path}). Start it with the members it has "
            "(their addresses may change); editing the names in --cluster would make stored "
            "votes refer to other members. Change the members with raftctl member add and "
            "member remove"
        )
