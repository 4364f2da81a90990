"""Storage in memory, for tests and the simulator, with an explicit durable/staged split."""

from __future__ import annotations

from collections.abc import Sequence

from raftd.core.types import DurableState, Entry, HardState
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
        self._hard_state = durable.hard_state
        self._entries: list[Entry] = list(durable.entries)
        self._staged_hard_state: HardState | None = None
        self._staged_appends: list[Sequence[Entry]] = []
        self._staged_last_index = self.last_index
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
        )

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        if first <= self._snapshot_index or first > self._staged_last_index + 1:
            raise StorageError(
                f"append at index {first} leaves a gap or rewrites the snapshot "
                f"(log holds {self._snapshot_index + 1}..{self._staged_last_index})"
            )
        self._staged_appends.append(tuple(entries))
        self._staged_last_index = entries[-1].index

    def set_hard_state(self, hard_state: HardState) -> None:
        self._staged_hard_state = hard_state

    def sync(self) -> None:
        if self._staged_hard_state is not None:
            self._hard_state = self._staged_hard_state
        base = self._snapshot_index + 1
        for entries in self._staged_appends:
            del self._entries[entries[0].index - base :]
            self._entries.extend(entries)
        self._staged_hard_state = None
        self._staged_appends.clear()
        self.sync_count += 1

    def crash(self) -> None:
        """Lose every write that was staged but not synced."""
        self._staged_hard_state = None
        self._staged_appends.clear()
        self._staged_last_index = self.last_index
