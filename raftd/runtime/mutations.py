"""Deliberate bugs for fault-injection runs, switched on only by RAFTD_TEST_MUTATION.

The nemesis harness must prove it would notice a broken store, on real processes, so
these switches have to live in the daemon; nothing else refers to them, a member
announces any of them loudly at start, and none is on unless the variable names it.

* ``follower-local-reads``: every member answers a linearizable get from its own state,
  without ReadIndex (a follower or a deposed leader serves stale data).
* ``no-dedup``: the state machine ignores client sessions (a retried write applies twice).
* ``ack-before-fsync``: the log is made durable only on every eighth batch, so members
  acknowledge entries a crash then loses.
* ``contact-at-dequeue``: a follower counts itself current whenever the driver dequeues a
  message from its leader (the old staleness rule), so a follower with a slow disk or a
  backlog answers ``get --max-staleness`` with values older than the bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from raftd import kv
from raftd.config import ConfigError
from raftd.core.types import DurableState, Entry, HardState, Snapshot
from raftd.storage.base import SnapshotStorage

ENV = "RAFTD_TEST_MUTATION"
MUTATIONS = ("follower-local-reads", "no-dedup", "ack-before-fsync", "contact-at-dequeue")
LAZY_SYNC_EVERY = 8


def from_env(environ: Mapping[str, str]) -> frozenset[str]:
    names = frozenset(filter(None, (n.strip() for n in environ.get(ENV, "").split(","))))
    unknown = names - set(MUTATIONS)
    if unknown:
        raise ConfigError(f"{ENV}: unknown mutation {sorted(unknown)}; known: {MUTATIONS}")
    return names


class NoDedupStore(kv.KVStore):
    """Applies every command, retries included: the session table is never consulted."""

    def apply(self, index: int, data: bytes, decoded: kv.Request | None = None) -> kv.Result:
        if index <= self._last_applied_index:
            raise ValueError(f"apply index {index} is not after {self._last_applied_index}")
        self._last_applied_index = index
        try:
            request = decoded if decoded is not None else kv.decode_request(data)
        except kv.CommandDecodeError:
            return kv.Result(False, None, False, kv.ERROR_UNDECODABLE)
        return self._execute(request.command, index)


class LazySyncStorage:
    """Makes staged writes durable only on every eighth sync; the others return at once,
    as if done, which is exactly what acknowledging before fsync amounts to."""

    def __init__(self, inner: SnapshotStorage) -> None:
        self._inner = inner
        self._calls = 0

    def load(self) -> DurableState:
        return self._inner.load()

    def append(self, entries: Sequence[Entry]) -> None:
        self._inner.append(entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self._inner.set_hard_state(hard_state)

    def sync(self) -> None:
        self._calls += 1
        if self._calls % LAZY_SYNC_EVERY == 0:
            self._inner.sync()

    def install_snapshot(self, snapshot: Snapshot) -> None:
        self._inner.install_snapshot(snapshot)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self._inner.save_snapshot(snapshot)

    def compact(self, index: int) -> None:
        self._inner.compact(index)
