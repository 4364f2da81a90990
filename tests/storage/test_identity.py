"""The identity file: ids assigned once, and flags that disagree with it refused."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from raftd.storage.identity import (
    IDENTITY_NAME,
    IdentityDamaged,
    IdentityMismatch,
    MemberIdentity,
    reconcile,
)
from raftd.storage.pagecache import PageCacheDisk

DIR = Path("member")
NAMES = ("n3", "n1", "n2")


def open_as(
    disk: PageCacheDisk, name: str = "n1", cluster_id: str = "raftd", names: tuple[str, ...] = NAMES
) -> tuple[MemberIdentity, str | None]:
    return reconcile(disk, DIR, name=name, cluster_id=cluster_id, names=names, has_history=False)


def fresh() -> PageCacheDisk:
    disk = PageCacheDisk()
    disk.ensure_dir(DIR)
    return disk


def test_a_new_member_assigns_the_sorted_ids_once_and_they_survive_a_power_cut() -> None:
    disk = fresh()
    identity, wrote = open_as(disk)
    assert identity == MemberIdentity("raftd", "n1", {"n1": 1, "n2": 2, "n3": 3})
    assert wrote is not None and "bootstrapped" in wrote
    disk.crash(random.Random(1))
    again, wrote = open_as(disk, names=("n1", "n2", "n3"))
    assert again == identity and wrote is None


def test_a_directory_with_history_but_no_identity_is_adopted_with_the_ids_it_had() -> None:
    disk = fresh()
    identity, wrote = reconcile(
        disk, DIR, name="n2", cluster_id="raftd", names=NAMES, has_history=True
    )
    assert identity.ids == {"n1": 1, "n2": 2, "n3": 3}
    assert wrote is not None and "written before identities were stored" in wrote


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"names": ("n0", "n1", "n2", "n3")}, "--cluster names n0, n1, n2, n3, but this member's"),
        ({"names": ("n1", "n2", "n4")}, "editing the names in --cluster"),
        ({"name": "n2"}, "holds member 'n1', not 'n2'"),
        ({"cluster_id": "other"}, "belongs to cluster 'raftd', not 'other'"),
    ],
)
def test_flags_that_disagree_with_the_stored_identity_are_refused(
    flags: dict[str, object], message: str
) -> None:
    disk = fresh()
    open_as(disk)
    before = disk.read(DIR / IDENTITY_NAME)
    with pytest.raises(IdentityMismatch, match=message):
        open_as(disk, **flags)  # type: ignore[arg-type]
    assert disk.read(DIR / IDENTITY_NAME) == before


@pytest.mark.parametrize(
    "content",
    [
        b'{"format": 1, "cluster_id": "raftd", "name": "n1", "memb',
        b"not json",
        json.dumps({"format": 9, "cluster_id": "raftd", "name": "n1", "members": {}}).encode(),
        json.dumps(
            {"format": 1, "cluster_id": "raftd", "name": "n1", "members": {"n1": 1, "n2": 1}}
        ).encode(),
        json.dumps(
            {"format": 1, "cluster_id": "raftd", "name": "n1", "members": {"n2": 2}}
        ).encode(),
        json.dumps(
            {"format": 1, "cluster_id": "raftd", "name": "n1", "members": {"n1": "one"}}
        ).encode(),
    ],
)
def test_a_damaged_identity_file_refuses_to_start(content: bytes) -> None:
    disk = fresh()
    disk.create(DIR / IDENTITY_NAME, content)
    with pytest.raises(IdentityDamaged, match="damaged"):
        open_as(disk)
