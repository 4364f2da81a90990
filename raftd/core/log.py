"""The in-memory Raft log, indexed from a snapshot offset.

Indexes are 1-based as in the paper. The log always knows the (index, term) of the entry
just before its first retained entry (``snapshot_index``/``snapshot_term``), so that the
consistency check on ``prev_log_index`` works at the boundary and compaction can later drop
a prefix without changing any caller.
"""

from __future__ import annotations

from raftd.core.types import Entry


class LogCompactedError(LookupError):
    """An index before the snapshot point was asked for; its entry no longer exists."""


class RaftLog:
    __slots__ = ("_entries", "snapshot_index", "snapshot_term")

    @property
    def first_index(self) -> int:
        """The first index still held (``last_index + 1`` when empty)."""
        return self.snapshot_index + 1

    def __init__(
        self, entries: tuple[Entry, ...] = (), snapshot_index: int = 0, snapshot_term: int = 0
    ) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self._entries: list[Entry] = list(entries)
        for offset, entry in enumerate(self._entries):
            if entry.index != snapshot_index + 1 + offset:
                raise ValueError(
                    f"log entries are not contiguous: expected index "
                    f"{snapshot_index + 1 + offset}, found {entry.index}"
                )

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``, or None when the log does not reach it."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index:
            raise LogCompactedError(index)
        if index > self.last_index:
            return None
        return self._entries[index - self.snapshot_index - 1].term

    def entry(self, index: int) -> Entry:
        if index <= self.snapshot_index:
            raise LogCompactedError(index)
        return self._entries[index - self.snapshot_index - 1]

    def slice(self, start: int, stop: int) -> tuple[Entry, ...]:
        """Entries with ``start <= index < stop``."""
        if start <= self.snapshot_index:
            raise LogCompactedError(start)
        base = self.snapshot_index + 1
        return tuple(self._entries[start - base : stop - base])

    def append(self, entry: Entry) -> None:
        if entry.index != self.last_index + 1:
            raise ValueError(f"append at {entry.index} but last index is {self.last_index}")
        self._entries.append(entry)

    def compact(self, index: int) -> None:
        """Forget every entry up to ``index`` (a snapshot covers them); the term of that
        entry stays known, for the consistency check on the next one."""
        if index <= self.snapshot_index:
            return
        term = self.term_at(index)
        if term is None:
            raise ValueError(f"cannot compact to {index}: the log ends at {self.last_index}")
        del self._entries[: index - self.snapshot_index]
        self.snapshot_index, self.snapshot_term = index, term

    def reset(self, index: int, term: int) -> None:
        """Discard the whole log for a snapshot ending at (``index``, ``term``)."""
        self._entries.clear()
        self.snapshot_index, self.snapshot_term = index, term

    def truncate_from(self, index: int) -> None:
        """Drop every entry at ``index`` or later (a conflicting, uncommitted suffix)."""
        if index <= self.snapshot_index:
            raise LogCompactedError(index)
        del self._entries[index - self.snapshot_index - 1 :]

    def is_up_to_date(self, last_log_index: int, last_log_term: int) -> bool:
        """Section 5.4.1: is a candidate's log at least as up-to-date as this one?"""
        if last_log_term != self.last_term:
            return last_log_term > self.last_term
        return last_log_index >= self.last_index

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries sharing the term found at ``index``.

        A follower returns this as ``conflict_index`` so the leader can skip the whole
        conflicting term in one round trip instead of one entry per round trip.
        """
        term = self.term_at(index)
        while index - 1 > self.snapshot_index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int | None:
        """The last index holding ``term``, searching back from the end; None if absent."""
        for entry in reversed(self._entries):
            if entry.term == term:
                return entry.index
            if entry.term < term:
                return None
        return self.snapshot_index if self.snapshot_term == term else None
