"""The trace budget: at most N traces a minute per member, counted exactly.

A member may send at most N traces per minute. Read strictly, and as the audit
(``python -m tests.tracecheck``) reads it: in every 60-second window, sliding, the distinct
trace ids for which a member exports spans number at most N, whether the member started
the trace or joined one another member started. A token bucket is not that: it
starts full and refills, so a member could keep about 2N in its first minute, and it
never counted the traces a member joins.

``TraceWindow`` is the member's ledger. Every instant at which the member touches a trace
(a span of it starts or ends, or the sampler admits it) is an *activity* of that trace,
and is recorded only if the cap allows it:

    a trace may act at instant t only if, of the *other* traces, fewer than N acted
    within [t - 60 s, the newest instant recorded so far].

The rule guarantees the cap for every window, whatever order activities arrive in (spans
may carry a start time in the past): take any window and, of the traces acting in it,
the one whose first activity there was recorded last. When it was recorded, every other
trace in the window had already acted within 60 s of it and no later than the newest
instant seen, so all of them were counted, and fewer than N of them there were. Since a
span's start and end are both activities, the audit's count is bounded whether it reads
start times, end times or both.

A trace refused once stays refused, so a member records all of its part of a trace or
none of it. A trace already in the window is refused only after a gap of a full window
between two of its activities, which a span longer than a minute would need.

The ledger outlives a restart through a small journal in the data directory: a member
killed and restarted within a minute still counts what it exported before.

``PeerRooms`` is what keeps kept traces whole. Followers join every client write the
leader keeps, and voters join every election; a member whose window is full records
nothing of such a trace, so the trace comes out partial. Every peer frame therefore
carries the sender's free room (frame header field ``r``), and a member starts a trace
others will join only if each of them, as last reported and less what it was sent since,
still has room.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

WINDOW_NS = 60 * 1_000_000_000
# Entries older than this behind the newest instant can no longer matter, even to an
# activity dated up to a window in the past.
_FORGET_NS = 2 * WINDOW_NS
_PRUNE_EVERY = 64
_NEVER = 1 << 63  # a cap of 0 never has room
# A journal is compacted once it holds this many lines (about a day at 20 a minute).
_JOURNAL_COMPACT_LINES = 10_000
# The journal records a trace again once its latest activity moved on this far, so after a
# restart a trace is taken to have acted up to this much after its last line.
_JOURNAL_STEP_NS = 1_000_000_000


class TraceWindow:
    """Which traces this member acted in, and when: the sliding-window ledger above."""

    def __init__(
        self,
        cap: int,
        *,
        window_ns: int = WINDOW_NS,
        journal: Path | None = None,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._wall_clock_ns = wall_clock_ns
        if cap < 0:
            raise ValueError(f"the trace cap must be >= 0, not {cap}")
        self.cap = cap
        self.window_ns = window_ns
        self._latest: dict[int, int] = {}  # trace id -> its latest recorded activity
        self._refused: dict[int, int] = {}  # trace id -> when it was refused
        self._newest = 0
        # No new trace fits before this instant: room appears only when a trace expires.
        self._full_until = 0
        self._since_prune = 0
        self._lock = threading.Lock()
        self.parts_refused = 0  # traces (or late spans) this member declined to record
        self._journal_path: Path | None = None
        self._journal_lines = 0
        self._journaled: dict[int, int] = {}
        if journal is not None:
            self.open_journal(journal)

    # ------------------------------------------------------------ the rule

    def admit(self, trace_id: int, at_ns: int, *, keep_free: int = 0) -> bool:
        """Record an activity of ``trace_id`` at ``at_ns`` if the cap allows it.

        ``keep_free`` applies to a trace new to the window: it must leave that many places
        free (the reserve that client traces leave for elections)."""
        with self._lock:
            if trace_id in self._refused:
                return False
            since = at_ns - self.window_ns
            known = self._latest.get(trace_id)
            new = known is None or known < since
            if new and at_ns < self._full_until and at_ns >= self._newest:
                self._refuse(trace_id, at_ns)
                return False
            active = [
                last for tid, last in self._latest.items() if last >= since and tid != trace_id
            ]
            limit = self.cap - 1 - (keep_free if new else 0)
            if len(active) > limit:
                if new:
                    self._refuse(trace_id, at_ns)
                    if keep_free == 0 and at_ns >= self._newest:
                        self._full_until = min(active) + self.window_ns + 1 if active else _NEVER
                else:
                    self.parts_refused += 1
                return False
            latest = at_ns if known is None else max(known, at_ns)
            self._latest[trace_id] = latest
            self._newest = max(self._newest, at_ns)
            self._journal(trace_id, latest)
            self._since_prune += 1
            if self._since_prune >= _PRUNE_EVERY:
                self._prune()
            return True

    def holds(self, trace_id: int) -> bool:
        """Whether the trace is in the ledger and not refused (a span of it may follow)."""
        with self._lock:
            return trace_id in self._latest and trace_id not in self._refused

    def refused(self, trace_id: int) -> bool:
        with self._lock:
            return trace_id in self._refused

    def refuse(self, trace_id: int, at_ns: int) -> None:
        """Keep the rest of a trace out (one of its spans could not be recorded)."""
        with self._lock:
            self._refuse(trace_id, at_ns)

    def room(self, now_ns: int) -> int:
        """Traces that could still start now, reserve included (what peers are told)."""
        with self._lock:
            since = now_ns - self.window_ns
            used = sum(1 for last in self._latest.values() if last >= since)
            return max(0, self.cap - used)

    def _refuse(self, trace_id: int, at_ns: int) -> None:
        if trace_id not in self._refused:
            self._refused[trace_id] = at_ns
            self.parts_refused += 1

    def _prune(self) -> None:
        self._since_prune = 0
        horizon = self._newest - _FORGET_NS
        self._latest = {t: last for t, last in self._latest.items() if last >= horizon}
        self._refused = {t: at for t, at in self._refused.items() if at >= horizon}
        self._journaled = {t: at for t, at in self._journaled.items() if at >= horizon}

    # ------------------------------------------------------------ the journal

    def open_journal(self, path: Path) -> None:
        """Count what was recorded before a restart, and record from now on in ``path``
        (in the member's data directory, once it holds the directory's lock)."""
        with self._lock:
            self._load_journal(path, self._wall_clock_ns())
            self._journal_path = path

    def _load_journal(self, path: Path, now_ns: int) -> None:
        """Traces acted in during the last window before a restart still count."""
        horizon = now_ns - _FORGET_NS
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) != 2:
                    continue  # a torn last line
                try:
                    trace_id, latest = int(parts[0], 16), int(parts[1]) + _JOURNAL_STEP_NS
                except ValueError:
                    continue
                if latest >= horizon:
                    self._latest[trace_id] = max(latest, self._latest.get(trace_id, 0))
        if self._latest:
            self._newest = max(self._latest.values())
        self._rewrite_journal(path)

    def _journal(self, trace_id: int, latest: int) -> None:
        if self._journal_path is None:
            return
        written = self._journaled.get(trace_id)
        if written is not None and latest - written < _JOURNAL_STEP_NS:
            return
        self._journaled[trace_id] = latest
        try:
            with open(self._journal_path, "a") as journal:
                journal.write(f"{trace_id:032x} {latest}\n")
        except OSError:
            return  # the ledger in memory still holds; only a restart would forget it
        self._journal_lines += 1
        if self._journal_lines >= _JOURNAL_COMPACT_LINES:
            self._prune()
            self._rewrite_journal(self._journal_path)

    def _rewrite_journal(self, path: Path) -> None:
        lines = "".join(f"{t:032x} {last}\n" for t, last in self._latest.items())
        temporary = path.with_name(path.name + ".tmp")
        try:
            temporary.write_text(lines)
            os.replace(temporary, path)
        except OSError:
            return
        self._journal_lines = len(self._latest)
        self._journaled = dict(self._latest)


class PeerRooms:
    """What this member knows of its peers' free room, for traces they would join.

    A peer's room is as it reported it, less the traces this member started since (each
    of which the peer may join). Reports are dated by when the peer built them; a peer
    silent for longer than ``stale_after_s`` is not waited for: it is not joining traces
    now, and if it comes back its own window decides."""

    def __init__(
        self, *, stale_after_s: float = 3.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stale_after_s = stale_after_s
        self._clock = clock
        self._reports: dict[object, tuple[int, float]] = {}  # peer -> (room, built at)
        self._started: deque[float] = deque()  # traces started that peers join
        self._lock = threading.Lock()

    def report(self, peer: object, room: int, age_s: float = 0.0) -> None:
        built = self._clock() - max(0.0, age_s)
        with self._lock:
            previous = self._reports.get(peer)
            if previous is None or built >= previous[1]:
                self._reports[peer] = (room, built)

    def started(self) -> None:
        """This member kept a trace its peers will join."""
        now = self._clock()
        with self._lock:
            self._started.append(now)
            horizon = now - self._stale_after_s - IN_FLIGHT_S
            while self._started and self._started[0] < horizon:
                self._started.popleft()

    def least_room(self) -> int | None:
        """The smallest estimated room among peers heard from lately (None: none were)."""
        now = self._clock()
        with self._lock:
            rooms = [
                room - sum(1 for at in self._started if at >= built - IN_FLIGHT_S)
                for room, built in self._reports.values()
                if now - built <= self._stale_after_s
            ]
        return min(rooms) if rooms else None


# A trace started shortly before a peer built its report may not have reached the peer
# yet, so it is counted against the report too (conservative: at worst counted twice).
IN_FLIGHT_S = 0.5
