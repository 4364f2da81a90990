"""When leases expire: the leader's clock, and no one else's.

A lease's expiry cannot be a function of the log (the store never reads a clock), and it
must not be every member's own guess either, or members would delete a lease's keys at
different revisions. So only the leader keeps deadlines, renews them on keepalives, and
ends a lease by proposing a LeaseRevoke through the log; every member deletes the keys when
that entry applies.

A new leader knows the leases (they are in the store it applied) but not when their
holders last renewed them: those renewals went to the old leader. It starts every deadline
at a full TTL from the moment its own state is current (etcd's rule: leases are extended by
the election), so a leader change never expires a lease whose holder kept it alive; a lease
whose holder is gone lives at most one TTL longer.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["LeaseClock"]


class LeaseClock:
    """The leader's deadlines, in the driver's clock (``trio.current_time``)."""

    __slots__ = ("_deadlines", "_leading", "_revoking")

    def __init__(self) -> None:
        self._deadlines: dict[int, float] = {}
        self._revoking: set[int] = set()
        self._leading = False

    @property
    def leading(self) -> bool:
        """Whether deadlines are kept: from ``lead`` until ``stop``."""
        return self._leading

    def lead(self, now: float, leases: Mapping[int, int]) -> None:
        """This member's state is current as leader: every lease starts a full TTL now."""
        self._deadlines = {lease: now + ttl_s for lease, ttl_s in leases.items()}
        self._revoking.clear()
        self._leading = True

    def stop(self) -> None:
        """No longer leading: the next leader decides."""
        self._deadlines.clear()
        self._revoking.clear()
        self._leading = False

    def granted(self, lease: int, ttl_s: int, now: float) -> None:
        if self._leading:
            self._deadlines[lease] = now + ttl_s

    def renew(self, lease: int, ttl_s: int, now: float) -> bool:
        """False for a lease that is not live here (expired and being revoked, or never
        granted): its holder must stop relying on it."""
        if not self._leading or lease not in self._deadlines or lease in self._revoking:
            return False
        self._deadlines[lease] = now + ttl_s
        return True

    def ended(self, lease: int) -> None:
        """Its LeaseRevoke applied (expired here, or revoked by its holder)."""
        self._deadlines.pop(lease, None)
        self._revoking.discard(lease)

    def expired(self, now: float) -> list[int]:
        """Leases past their deadline whose revocation is not yet proposed, in id order;
        they count as being revoked until ``ended`` or ``retry``."""
        due = sorted(
            lease
            for lease, deadline in self._deadlines.items()
            if deadline <= now and lease not in self._revoking
        )
        self._revoking.update(due)
        return due

    def retry(self, lease: int) -> None:
        """The revocation was not committed (leadership lost, timeout): propose it again
        at the next check if this member still leads."""
        self._revoking.discard(lease)
