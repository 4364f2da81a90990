"""Watches: the changes each member applies, kept for a while and pushed to watchers.

A change's revision is the index of the entry that made it, the same on every member, so a
watcher that loses its member resumes anywhere from the revision after the last one it saw
and gets every later change exactly once. Each member keeps the most recent changes in a
bounded history; a watcher asking for changes older than that (or older than the snapshot
the member started from) is told ``compacted`` rather than silently given less.

Memory is bounded twice: the history by a count of changes, each watcher's queue by a
count of undelivered changes. A watcher that falls behind its queue's bound is dropped with
a reason, never allowed to grow the member's memory; it can resume from where it was.
Everything here runs in the trio thread, between awaits: the driver publishes inside its
turn, and a subscriber reads the history and registers in one synchronous step, so no
change falls between the two.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import trio

from raftd.kvsnapshot import Stored

__all__ = ["Change", "Compacted", "WatchHub", "Watcher"]

HISTORY_CHANGES = 10_000
WATCHER_QUEUE_CHANGES = 10_000
MAX_WATCHERS = 1024


class Change(NamedTuple):
    """A key put (``stored``) or deleted (``stored`` None) at ``revision``; ``context`` is
    the trace context of the write, if it was traced. A tuple: one is made for every key
    every write changes, on the driver's apply path."""

    revision: int
    key: str
    stored: Stored | None
    context: str


class Compacted(Exception):
    """The changes asked for are no longer (or never were) in this member's history."""

    def __init__(self, asked: int, floor: int) -> None:
        super().__init__(
            f"revision {asked} is compacted: this member has the changes after revision {floor}"
        )
        self.floor = floor


class Watcher:
    """One watch: keys in ``[start, end)``, its undelivered changes, why it was dropped."""

    __slots__ = ("_wakeup", "dropped", "end", "pending", "start")

    def __init__(self, start: str, end: str | None) -> None:
        self.start = start
        self.end = end
        self.pending: deque[Change] = deque()
        self.dropped: str | None = None
        self._wakeup = trio.Event()

    def matches(self, key: str) -> bool:
        return key >= self.start and (self.end is None or key < self.end)

    def push(self, change: Change) -> None:
        if self.dropped is not None:
            return
        if len(self.pending) >= WATCHER_QUEUE_CHANGES:
            self.drop(f"fell {len(self.pending)} changes behind")
            return
        self.pending.append(change)
        self._wakeup.set()

    def drop(self, why: str) -> None:
        if self.dropped is None:
            self.dropped = why
            self.pending.clear()
        self._wakeup.set()

    async def next_batch(self, most: int) -> list[Change]:
        """Up to ``most`` changes, waiting for the first; empty once dropped."""
        while not self.pending and self.dropped is None:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
        batch: list[Change] = []
        while self.pending and len(batch) < most:
            batch.append(self.pending.popleft())
        return batch


class WatchHub:
    """The member's history of changes and its watchers."""

    def __init__(self, floor: int, history_changes: int = HISTORY_CHANGES) -> None:
        self.floor = floor  # changes at or before this revision are not in the history
        self.revision = floor  # the last revision published (applied)
        self._history: deque[Change] = deque()
        self._capacity = history_changes
        self._watchers: set[Watcher] = set()

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def publish(
        self, revision: int, changes: list[tuple[str, Stored | None]], context: str
    ) -> None:
        history = self._history
        for key, stored in changes:
            change = Change(revision, key, stored, context)
            if len(history) >= self._capacity:
                # A revision may be cut in the middle of its changes: then none of it counts.
                self.floor = history.popleft().revision
            history.append(change)
            for watcher in self._watchers:
                if watcher.matches(key):
                    watcher.push(change)
        self.revision = revision

    def applied(self, revision: int) -> None:
        """An entry that changed no key (a no-op, a configuration) was applied."""
        self.revision = revision

    def reset(self, floor: int) -> None:
        """A snapshot replaced the state: the history before it is unknown, and every
        watcher must resume elsewhere or from the snapshot on."""
        self._history.clear()
        self.floor = self.revision = floor
        for watcher in self._watchers:
            watcher.drop(f"this member installed a snapshot at revision {floor}")
        self._watchers.clear()

    def subscribe(self, start: str, end: str | None, start_revision: int) -> Watcher:
        """A watcher with every change from ``start_revision`` in the history already
        queued (0: from now on). Raises ``Compacted``, or ``OverflowError`` when the
        member has as many watchers as it takes."""
        if start_revision and start_revision <= self.floor:
            raise Compacted(start_revision, self.floor)
        if len(self._watchers) >= MAX_WATCHERS:
            raise OverflowError(f"this member serves {MAX_WATCHERS} watches already")
        watcher = Watcher(start, end)
        if start_revision:
            for change in self._history:
                if change.revision >= start_revision and watcher.matches(change.key):
                    watcher.push(change)
        self._watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
