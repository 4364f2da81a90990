"""Locks and elections built from leases, revisions and ranges (etcd's concurrency recipes).

A contender writes one key under the lock's name, ``NAME/<lease id in hex>``, created only
if absent and attached to a lease it keeps alive. The contender whose key has the lowest
create revision holds the lock; the others wait until every key created before theirs is
gone (released, or its holder died and its lease expired), so waiters are served in the
order they arrived.

The holder's create revision is its fencing token (Kleppmann, "How to do distributed
locking"): revisions are log indexes, so a later holder always has a larger token, and a
store that remembers the largest token it has seen can refuse a paused holder's late
writes. The lock itself cannot prevent that pause: a holder that stops for longer than its
lease's TTL loses the lock without knowing it, which is why the token exists.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from cli.client import Client, ClientError
from raftd.kv import prefix_end
from wire.api import KeyValue

__all__ = ["Held", "LeaseLost", "contenders", "hold", "keep_alive"]

# How often a waiter looks at the key before its own; with jitter, so waiters that started
# together do not ask in step.
POLL_S = 0.1


class LeaseLost(Exception):
    """The lease behind a lock or a campaign ended (expired or revoked) while held."""


@dataclass(frozen=True, slots=True)
class Held:
    """A lock or a leadership: the key that holds it, its lease, and the fencing token."""

    key: str
    lease: int
    token: int


def prefix_of(name: str) -> str:
    return name.rstrip("/") + "/"


async def contenders(client: Client, name: str) -> list[KeyValue]:
    """Every key under the lock's name, in the order they will hold it (create revision)."""
    prefix = prefix_of(name)
    found = (await client.range_all(prefix, prefix_end(prefix))).items
    return sorted(found, key=lambda item: item.create_revision)


async def keep_alive(client: Client, lease: int, ttl_s: int, lost: Callable[[], None]) -> None:
    """Renew ``lease`` three times a TTL until cancelled; ``lost()`` once it is gone.

    A renewal that fails for want of an answer (a leader election, a slow member) is tried
    again at once until the lease would have run out; only ``not_found`` means it ended."""
    interval = ttl_s / 3
    while True:
        try:
            await client.lease_keepalive(lease)
        except ClientError as exc:
            if exc.code == "not_found":
                lost()
                return
            await trio.sleep(min(interval, POLL_S))
            continue
        await trio.sleep(interval)


@asynccontextmanager
async def hold(
    client: Client,
    name: str,
    value: str,
    ttl_s: int,
    *,
    waiting: Callable[[KeyValue], None] | None = None,
) -> AsyncIterator[tuple[Held, trio.CancelScope]]:
    """Wait for and hold the lock (or leadership) ``name``; released (its lease revoked)
    on exit. Yields what is held and a cancel scope that is cancelled if the lease is lost
    meanwhile (then ``LeaseLost`` is raised on exit). ``waiting`` is told who holds the
    lock each time that changes while this contender waits."""
    grant = await client.lease_grant(ttl_s)
    lease = grant.lease
    key = f"{prefix_of(name)}{lease:016x}"
    lost = trio.Event()
    scope = trio.CancelScope()  # the caller's to enter; cancelled if the lease is lost
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_alive, client, lease, ttl_s, lost.set)
            nursery.start_soon(_cancel_when, lost, scope)
            # What the waiting or the caller's body raises leaves the nursery as itself,
            # not wrapped in an exception group, once the renewals are stopped.
            try:
                created = await client.cas(key, None, value, lease=lease)
                if not created.ok:  # cannot happen: the key names a lease granted just now
                    raise LeaseLost(f"{key} already existed")
                await _wait_for_turn(client, name, key, created.index, lost, waiting)
                yield Held(key, lease, created.index), scope
            except BaseException as exc:  # re-raised below, unchanged
                if isinstance(exc, GeneratorExit):
                    raise
                failure = exc
            nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if lost.is_set():
            raise LeaseLost(f"the lease behind {key} ended while it was held")
    finally:
        # Released at once; if the cluster cannot be told, the lease expires by itself.
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(client.timeout_s),
            contextlib.suppress(ClientError),
        ):
            await client.lease_revoke(lease)


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _wait_for_turn(
    client: Client,
    name: str,
    key: str,
    token: int,
    lost: trio.Event,
    waiting: Callable[[KeyValue], None] | None,
) -> None:
    """Until no contender has a lower create revision than ``token``."""
    rng = random.Random()
    holder_seen: str | None = None
    while True:
        if lost.is_set():
            raise LeaseLost(f"the lease behind {key} ended while it waited")
        queue = await contenders(client, name)
        ahead = [item for item in queue if item.create_revision < token]
        if not ahead:
            return
        if waiting is not None and ahead[0].key != holder_seen:
            holder_seen = ahead[0].key
            waiting(ahead[0])
        await trio.sleep(POLL_S * rng.uniform(0.5, 1.5))
