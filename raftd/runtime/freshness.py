"""How stale this member's state may be: the bound behind ``get --max-staleness``.

The promise a stale read makes is: every write acknowledged to any client before the
instant ``now - age`` is already applied here. Hearing from the leader recently is not
that promise. The earlier rule stamped "leader contact" when the driver dequeued a
message (a slow disk kept the driver busy for seconds while the message waited), also
on appends it rejected, and took contact to mean caught up; a member of a deposed leader
stayed "fresh" until check-quorum, and a new leader reported age 0 before its no-op had
committed. This module keeps the promise instead:

- *A leader's* state is current as of the moment a quorum (itself included) last
  answered it in its term, dated by when each answer was *built* (the transport
  subtracts the time a frame waited in queues or in an injected delay), and only once
  it has applied an entry of its own term: before that, entries earlier leaders
  committed may not be applied yet.
- *A leader's message* carries its lag (how stale its state was when it built the
  message) and its commit index. A follower that has applied that far is then as
  current as the leader was: its point is the message's build time minus that lag.
  Until it has applied that far, the point waits in a short queue.

Time is the member's own monotonic clock; a duration (an age, a lag) crosses machines
unchanged. The time a frame spends on the wire (and in a proxy, or a receiver too busy to
read it) is taken from the sender's and receiver's wall clocks: exact on one machine, and
optimistic by the clock difference across machines whose receiver runs behind. The 600 s
nemesis found that leaving it out made the bound tens of milliseconds optimistic under load.
The nemesis and the lincheck staleness pass check the bound end to end.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

# Points waiting for their commit index to be applied. Dominated points are dropped as
# new ones arrive, so this only grows while applying falls far behind; beyond it the
# oldest are forgotten, which only makes the member look staler than it is.
MAX_WAITING_POINTS = 1024


class Freshness:
    def __init__(self) -> None:
        self._current_as_of = -math.inf
        self._waiting: deque[tuple[int, float]] = deque()  # (index to apply, instant)
        self._heard: dict[int, float] = {}  # peer -> build time of its latest answer

    def heard_from(self, peer: int, built_at: float) -> None:
        """A peer answered this leader in its current term, in a message built then."""
        if built_at > self._heard.get(peer, -math.inf):
            self._heard[peer] = built_at

    def heard_at(self, peer: int) -> float | None:
        """When ``peer``'s latest answer to this leader was built (None: not yet)."""
        return self._heard.get(peer)

    def forget_answers(self) -> None:
        """Answers to an earlier leadership say nothing about the current one."""
        self._heard.clear()

    def leader_point(self, now: float, peers: Iterable[int], quorum: int) -> float:
        """When this leader was last known to lead: the build time of the answer that
        completed its freshest quorum (``now`` for a one-member cluster)."""
        heard = sorted((self._heard.get(p, -math.inf) for p in peers), reverse=True)
        needed = quorum - 1
        if needed <= 0:
            return now
        return min(now, heard[needed - 1]) if len(heard) >= needed else -math.inf

    def leader_says(self, instant: float, commit_index: int, applied_index: int) -> None:
        """The leader's state at ``instant`` is captured by its ``commit_index``."""
        if commit_index <= applied_index:
            self._current_as_of = max(self._current_as_of, instant)
            return
        waiting = self._waiting
        while waiting and waiting[-1][0] >= commit_index and waiting[-1][1] <= instant:
            waiting.pop()
        waiting.append((commit_index, instant))
        if len(waiting) > MAX_WAITING_POINTS:
            waiting.popleft()

    def applied(self, applied_index: int) -> None:
        waiting = self._waiting
        while waiting and waiting[0][0] <= applied_index:
            self._current_as_of = max(self._current_as_of, waiting.popleft()[1])

    def stamp(self, instant: float) -> None:
        """Declare the state current as of ``instant`` (only the contact-at-dequeue
        mutant does this without proof)."""
        self._current_as_of = max(self._current_as_of, instant)

    def age(self, now: float, leader_point: float = -math.inf) -> float | None:
        """Seconds since the state was last known current, or None if it never was."""
        point = max(self._current_as_of, leader_point)
        if point == -math.inf:
            return None
        return max(0.0, now - point)
