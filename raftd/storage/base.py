"""The Storage protocol: what the runtime needs from a durable log.

Writes are staged by ``append`` and ``set_hard_state`` and become durable only at ``sync``:
that split is exactly what a crash can expose (staged writes vanish, synced ones survive),
and it lets one ``sync`` cover every entry of a Ready (group commit). ``load`` returns only
durable state, which is all a restarting node may trust.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from raftd.core.node import Ready
from raftd.core.types import DurableState, Entry, HardState, Snapshot


class StorageError(Exception):
    """Stored data cannot be trusted (corruption, a gap in the log, a failed write)."""


class Storage(Protocol):
    def load(self) -> DurableState:
        """The durable state a node restarts from."""
        ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Stage ``entries``, first dropping every stored entry at or after ``entries[0]``."""
        ...

    def set_hard_state(self, hard_state: HardState) -> None:
        """Stage a new term/vote record."""
        ...

    def sync(self) -> None:
        """Make everything staged so far durable, in one step."""
        ...


@runtime_checkable
class SnapshotStorage(Storage, Protocol):
    """A Storage that can also hold snapshots and drop the entries they cover."""

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Stage a snapshot from the leader: at ``sync`` it replaces the whole log (entries
        staged after it follow it)."""
        ...

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Make a snapshot of this member's own state durable now (before ``compact``)."""
        ...

    def compact(self, index: int) -> None:
        """Drop the entries up to ``index``, which a durable snapshot covers."""
        ...


def stage_ready(storage: Storage, ready: Ready) -> None:
    """Stage what a Ready asks to be made durable; the caller's ``sync()`` then commits it.

    Kept apart from ``sync`` so the caller decides when the fsync happens (in a worker
    thread, once per batch) and a simulator can crash a node between the two.
    """
    if ready.hard_state is not None:
        storage.set_hard_state(ready.hard_state)
    if ready.snapshot is not None:
        if not isinstance(storage, SnapshotStorage):
            raise StorageError(f"{type(storage).__name__} cannot hold a snapshot")
        storage.install_snapshot(ready.snapshot)
    storage.append(ready.entries)
