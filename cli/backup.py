"""Backups: fetch a consistent snapshot from the leader (``raftctl snapshot save``).

The request goes to the endpoints in turn, following a redirect to the leader; the leader
answers in ``SnapshotPart`` frames, which are put together in order and checked against
the digest they carry before anything is written. The file is the same snapshot file a
member keeps in its data directory (``raftd.storage.snapfile``), named for the cluster it
came from; ``raftd restore`` seeds a new member from it.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import trio

from cli.client import ClientError, DefiniteError, Unavailable, UnknownOutcome, open_stream
from raftd.core import Snapshot, SnapshotMeta
from raftd.storage import snapfile
from wire.api import (
    ErrorCode,
    ErrorReply,
    SnapshotPart,
    SnapshotRequest,
)
from wire.codec import Header
from wire.frame import WireError
from wire.tls import TlsFailure

NO_LEADER_RETRY_S = 0.2


@dataclass(frozen=True, slots=True)
class Backup:
    snapshot: Snapshot
    cluster_id: str
    served_by: str


async def fetch(
    endpoints: list[str], timeout_s: float, tls: ssl.SSLContext | None = None
) -> Backup:
    """The leader's snapshot, whole and checked; ``ClientError`` when it cannot be had."""
    queue = list(endpoints)
    failures: list[str] = []
    try:
        with trio.fail_after(timeout_s):
            while queue:
                endpoint = queue.pop(0)
                try:
                    outcome = await _ask(endpoint, tls)
                except (OSError, trio.BrokenResourceError, WireError, TlsFailure) as exc:
                    failures.append(f"{endpoint}: {exc}")
                    continue
                if isinstance(outcome, Backup):
                    return outcome
                if outcome.code == ErrorCode.NOT_LEADER and outcome.leader_addr:
                    queue.insert(0, outcome.leader_addr)
                elif outcome.code == ErrorCode.NO_LEADER:
                    await trio.sleep(NO_LEADER_RETRY_S)
                    queue.append(endpoint)
                elif outcome.definite:
                    raise DefiniteError(outcome.code, outcome.message, endpoint=endpoint)
                else:
                    failures.append(f"{endpoint}: {outcome.message}")
    except trio.TooSlowError:
        raise UnknownOutcome(
            "timeout", f"no whole snapshot within {timeout_s:g} s", endpoint=None
        ) from None
    raise Unavailable("unavailable", "no member could send a snapshot: " + "; ".join(failures))


async def _ask(endpoint: str, tls: ssl.SSLContext | None) -> Backup | ErrorReply:
    stream = await open_stream(endpoint, tls)
    try:
        await stream.send(Header("SnapshotRequest", 1), SnapshotRequest())
        parts: list[bytes] = []
        received = 0
        while True:
            got = await stream.receive()
            if got is None:
                raise trio.BrokenResourceError("the member closed the connection mid-snapshot")
            _, reply = got
            if isinstance(reply, ErrorReply):
                return reply
            if not isinstance(reply, SnapshotPart) or reply.offset != received:
                raise WireError(f"unexpected reply {type(reply).__name__} in a snapshot")
            parts.append(reply.data)
            received += len(reply.data)
            if received >= reply.total_bytes:
                data = b"".join(parts)
                if hashlib.sha256(data).digest() != reply.digest:
                    raise WireError("the snapshot failed its checksum on the way")
                meta = SnapshotMeta(reply.index, reply.term, ())
                return Backup(Snapshot(meta, data), reply.cluster_id, endpoint)
    finally:
        await stream.aclose()


def write_file(path: Path, backup: Backup) -> int:
    """Write the backup as a snapshot file, whole or not at all; returns its size."""
    content = snapfile.encode(backup.snapshot, backup.cluster_id)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise DefiniteError("write_failed", f"cannot write {path}: {exc.strerror or exc}") from exc
    return len(content)


__all__ = ["Backup", "ClientError", "fetch", "write_file"]
