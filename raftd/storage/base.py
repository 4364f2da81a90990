"""The Storage protocol: what the runtime needs from a durable log.

Writes are staged by ``append`` and ``set_hard_state`` and become durable only at ``sync``:
that split is exactly what a crash can expose (staged writes vanish, synced ones survive),
and it lets one ``sync`` cover every entry of a Ready (group commit). ``load`` returns only
durable state, which is all a restarting node may trust.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raftd.core.types import DurableState, Entry, HardState


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
