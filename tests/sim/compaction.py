"""Snapshots in the simulator: when nodes compact, and what a snapshot holds.

A seed draws its compaction from a generator of its own (so the faults it draws stay the
same): most seeds compact, every few to a few dozen applied entries, keeping a trailing
window of none to a dozen entries. The state machine is each node's list of applied
entries; a snapshot's data is a short token naming that list in a registry, so snapshots
cost nothing to copy and a node restored from one holds exactly the entries it stands for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from raftd.core import Entry, EntryKind


@dataclass(frozen=True, slots=True)
class Compaction:
    every_entries: int  # 0: this seed never compacts
    keep_entries: int

    @staticmethod
    def draw(seed: int) -> Compaction:
        rng = random.Random(seed * 40_503 + 11)
        if rng.random() < 0.3:
            return Compaction(0, 0)
        return Compaction(rng.choice((3, 5, 10, 20, 50)), rng.choice((0, 0, 1, 3, 12)))

    def due(self, applied: int, snapshot_index: int) -> bool:
        return self.every_entries > 0 and applied - snapshot_index >= self.every_entries


class SnapshotRegistry:
    """Snapshot tokens to the applied entries they stand for.

    A token names one saved state; whether two nodes' states agree is the checker's
    business (every entry of a restored state is held against what others applied)."""

    def __init__(self) -> None:
        self._states: dict[bytes, tuple[Entry, ...]] = {}

    def save(self, applied: list[Entry]) -> bytes:
        token = f"state{len(self._states) + 1}@{len(applied)}".encode()
        self._states[token] = tuple(applied)
        return token

    def load(self, token: bytes) -> list[Entry]:
        return list(self._states[token])


def commands(entries: list[Entry]) -> set[bytes]:
    return {e.data for e in entries if e.kind is EntryKind.NORMAL}
