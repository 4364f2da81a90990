"""The leader's own fsync, off its consensus loop.

A leader may send its entries before they are durable on its own disk (Raft thesis,
section 10.2.1) and counts its own copy towards a majority only once it is. Awaiting that
fsync inside the consensus loop still stopped everything else the loop does for as long as
the disk took: follower acknowledgements waited to be counted and new requests waited to
be proposed, on a busy disk for most of a write's latency (docs/performance.md). Here the
loop only stages a Ready's entries and goes on; one task syncs whatever has been staged
(one fsync covers every entry staged before it started, so batches grow while the disk is
slow) and then reports how far the log is durable, which the loop hands to the core
(``RaftNode.persisted``).

Syncs run one at a time, in order, and a member whose disk fails stops (the error leaves
this task and takes the member's nursery down), exactly as when the loop synced itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from raftd.core import Entry


class BackgroundSync:
    def __init__(
        self,
        sync: Callable[[list[Entry]], Awaitable[None]],
        on_durable: Callable[[int, int], None],
    ) -> None:
        """``sync(entries)`` makes everything staged durable (``entries``: what it covers,
        for spans and metrics); ``on_durable(index, term)`` is told how far it got."""
        self._sync = sync
        self._on_durable = on_durable
        self._entries: list[Entry] = []
        self._wanted = trio.Event()
        self._idle = trio.Event()  # set while no sync runs
        self._idle.set()

    def staged(self, entries: tuple[Entry, ...]) -> None:
        """These entries were staged to storage (in log order); sync them soon."""
        self._entries.extend(entries)
        self._wanted.set()

    def take(self) -> list[Entry]:
        """The entries staged that no sync has started on: the caller's sync covers them."""
        entries, self._entries = self._entries, []
        return entries

    @property
    def running(self) -> bool:
        """A sync is under way (a caller about to sync in place must wait for ``idle``)."""
        return not self._idle.is_set()

    async def idle(self) -> None:
        """Wait until no sync runs. A caller about to sync in place waits here first, so
        the loop's thread never blocks on the storage's lock behind a worker's fsync."""
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            entries, self._entries = self._entries, []
            if not entries:
                continue
            self._idle = trio.Event()
            try:
                await self._sync(entries)
            finally:
                self._idle.set()
            last = entries[-1]
            self._on_durable(last.index, last.term)
