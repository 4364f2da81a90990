"""Storage in memory, for tests and the simulator, with an explicit durable/staged split."""

from __future__ import annotations

from collections.abc import Sequence

from raftd.core.types import DurableState, Entry, HardState, Snapshot
from raftd.storage.base import StorageError


class MemoryStorage:
    """Keeps the durable log and the writes staged since the last ``sync``.

    ``crash`` throws the staged writes away, as a power cut would, so a simulator restarting a
    node from ``load()`` sees exactly what an fsync'd file would hold.
    """

    def __init__(self, durable: DurableState | None = None) -> None:
        durable = durable or DurableState()
        self._snapshot_index = durable.snapshot_index
        self._snapshot_term = durable.snapshot_term
        self._snapshot = durable.snapshot
        self._hard_state = durable.hard_state
        self._entries: list[Entry] = list(durable.entries)
        self._staged_hard_state: HardState | None = None
        # In order: entries to append, or a snapshot that replaces the log.
        self._staged: list[Sequence[Entry] | Snapshot] = []
        self._staged_last_index = self.last_index
        self._staged_first_index = self._snapshot_index + 1
        self.sync_count = 0

    @property
    def last_index(self) -> int:
        """The last durable index."""
        return self._snapshot_index + len(self._entries)

    def load(self) -> DurableState:
        return DurableState(
            hard_state=self._hard_state,
            entries=tuple(self._entries),
            snapshot_index=self._snapshot_index,
            snapshot_term=self._snapshot_term,
            snapshot=self._snapshot,
        )

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        if first < self._staged_first_index or first > self._staged_last_index + 1:
            raise StorageError(
                f"append at index {first} leaves a gap or rewrites the snapshot "
                f"(log holds {self._staged_first_index}..{self._staged_last_index})"
            )
        self._staged.append(tuple(entries))
        self._staged_last_index = entries[-1].index

    def install_snapshot(self, snapshot: Snapshot) -> None:
        self._staged.append(snapshot)
        self._staged_first_index = snapshot.meta.index + 1
        self._staged_last_index = snapshot.meta.index

    def save_snapshot(self, snapshot: Snapshot) -> None:
        if self._snapshot is not None and snapshot.meta.index < self._snapshot.meta.index:
            raise StorageError(
                f"snapshot at {snapshot.meta.index} is older than the stored one at "
                f"{self._snapshot.meta.index}"
            )
        if snapshot.meta.index < self._snapshot_index:
            raise StorageError(
                f"snapshot at {snapshot.meta.index} is older than the log's start "
                f"{self._snapshot_index}"
            )
        self._snapshot = snapshot

    def compact(self, index: int) -> None:
        """Drops durable entries up to ``index`` (entries not durable yet are left to the
        next compaction: the snapshot already holds what they say)."""
        if self._snapshot is None or index > self._snapshot.meta.index:
            raise StorageError(f"no durable snapshot covers index {index}")
        index = min(index, self.last_index)
        if index <= self._snapshot_index:
            return
        self._snapshot_term = self._entries[index - self._snapshot_index - 1].term
        del self._entries[: index - self._snapshot_index]
        self._snapshot_index = index

    def set_hard_state(self, hard_state: HardState) -> None:
        self._staged_hard_state = hard_state

    def sync(self) -> None:
        if self._staged_hard_state is not None:
            self._hard_state = self._staged_hard_state
        for staged in self._staged:
            if isinstance(staged, Snapshot):
                self._entries.clear()
                self._snapshot_index, self._snapshot_term = staged.meta.index, staged.meta.term
                self._snapshot = staged
                continue
            kept = [e for e in staged if e.index > self._snapshot_index]
            if not kept:
                continue  # all inside the compacted prefix
            del self._entries[kept[0].index - self._snapshot_index - 1 :]
            self._entries.extend(kept)
        self._staged_hard_state = None
        self._staged.clear()
        self.sync_count += 1

    def crash(self) -> None:
        """Lose every write that was staged but not synced."""
        self._staged_hard_state = None
        self._staged.clear()
        self._staged_last_index = self.last_index
        self._staged_first_index = self._snapshot_index + 1
