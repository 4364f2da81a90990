"""``raftd restore``: seed a member's empty data directory from a backup.

Every member of the new cluster is restored from the same backup file (written by
``raftctl snapshot save``); each then starts with the backup's state as its snapshot and an
empty log after it, so they agree from the first election on. The directory must not hold
a member already: restoring over a live log would mix two histories.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raftd import kvsnapshot
from raftd.config import ConfigError, parse_cluster
from raftd.core import HardState, Snapshot, SnapshotMeta
from raftd.storage import StorageError, WalStorage, snapfile
from raftd.storage.fs import OsFileSystem
from raftd.storage.identity import IDENTITY_NAME, MemberIdentity, bootstrap_ids
from raftd.storage.wal import SEGMENT_PREFIX, WAL_NAME

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    restore = commands.add_parser(
        "restore",
        help="seed a new member's data directory from a backup",
        description="Write a member's data directory from a backup made by `raftctl snapshot "
        "save`: the backup becomes its snapshot, its log starts empty after it. Restore every "
        "member of the new cluster from the same file, then start them with `raftd run` and "
        "the same --cluster. Exit status: 0 restored, 1 the backup cannot be used, 2 usage.",
    )
    restore.add_argument("--snapshot", required=True, type=Path, help="the backup file")
    restore.add_argument("--data-dir", required=True, type=Path, help="an empty directory")
    restore.add_argument("--id", required=True, help="the member this directory is for")
    restore.add_argument(
        "--cluster", required=True, help="every member of the new cluster as NAME=HOST:PORT"
    )
    restore.add_argument(
        "--cluster-id",
        default="raftd",
        help="the new cluster's id (default raftd); may differ from the backup's",
    )


def run_restore(args: argparse.Namespace) -> int:
    try:
        members = parse_cluster(args.cluster)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.id not in members:
        return _fail(f"--id {args.id!r} is not in --cluster ({', '.join(members)})", EXIT_USAGE)
    try:
        content = args.snapshot.read_bytes()
    except OSError as exc:
        return _fail(f"cannot read {args.snapshot}: {exc.strerror or exc}", EXIT_FAILED)
    try:
        backup = snapfile.decode(content, name=str(args.snapshot))
        kvsnapshot.decode(backup.snapshot.data)  # a store this raftd can load, or refuse now
    except ValueError as exc:
        return _fail(f"cannot restore from it: {exc}", EXIT_FAILED)
    data_dir: Path = args.data_dir
    if data_dir.exists() and any(
        p.name in (WAL_NAME, IDENTITY_NAME)
        or p.name.startswith(SEGMENT_PREFIX)
        or p.suffix == snapfile.SUFFIX
        for p in data_dir.iterdir()
    ):
        return _fail(
            f"{data_dir} already holds a member's data; restore only into an empty directory "
            "(move the old one aside first)",
            EXIT_USAGE,
        )
    old = backup.snapshot.meta
    identity = MemberIdentity(args.cluster_id, args.id, bootstrap_ids(members))
    voters = tuple(sorted(identity.ids.values()))
    snapshot = Snapshot(SnapshotMeta(old.index, old.term, voters), backup.snapshot.data)
    try:
        with WalStorage.open(data_dir, cluster_id=args.cluster_id) as wal:
            OsFileSystem().create(data_dir / IDENTITY_NAME, identity.encode())
            wal.set_hard_state(HardState(old.term, None))
            wal.install_snapshot(snapshot)
            wal.sync()
    except (StorageError, OSError) as exc:
        return _fail(str(exc), EXIT_FAILED)
    renamed = (
        ""
        if backup.cluster_id == args.cluster_id
        else f" (the backup came from cluster {backup.cluster_id!r})"
    )
    print(
        f"restored {args.id} in {data_dir} from {args.snapshot}: the store as of index "
        f"{old.index}, term {old.term}, in cluster {args.cluster_id!r}{renamed}. Restore the "
        f"other members from the same file, then start each with raftd run."
    )
    return EXIT_OK


def _fail(message: str, status: int) -> int:
    print(f"raftd restore: {message}", file=sys.stderr)
    return status
