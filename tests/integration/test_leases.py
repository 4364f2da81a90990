"""Revisions, ranges and leases against three real members: what a lock or an election
recipe is built from."""

from __future__ import annotations

import pytest
import trio

from cli.client import Client, DefiniteError, next_start
from raftd.kv import prefix_end
from tests.integration.harness import Cluster
from wire.api import ErrorReply, RangeRequest, StateHashRequest, StatusReply


async def same_state_everywhere(cluster: Cluster) -> None:
    """Every member deleted the keys at the same revision: at the same applied index, the
    same digest of data, revisions, leases and sessions."""
    with trio.fail_after(20):
        while True:
            seen = set()
            for name in cluster.members:
                reply = await cluster.request(name, StateHashRequest())
                assert isinstance(reply, StatusReply)
                seen.add((reply.last_applied, reply.state_hash))
            if len(seen) == 1:
                return
            await trio.sleep(0.1)


async def test_revisions_and_ranges_read_at_a_revision(cluster: Cluster) -> None:
    async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
        first = await client.set("app/a", "1")
        second = await client.set("app/b", "2")
        await client.set("other", "x")
        again = await client.set("app/a", "1")  # the same text, a new mod revision
        got = await client.get("app/a")
        assert (got.create_revision, got.mod_revision) == (first.index, again.index)
        assert got.revision >= again.index
        stale = await client.cas("app/a", None, "3", mod_revision=first.index)
        assert not stale.ok and stale.value == "1"
        swapped = await client.cas("app/a", None, "3", mod_revision=again.index)
        assert swapped.ok
        page = await client.range("app/", prefix_end("app/"), limit=1)
        assert [item.key for item in page.items] == ["app/a"] and page.more
        rest = await client.range(next_start(page), prefix_end("app/"), limit=1)
        assert [(i.key, i.value, i.create_revision) for i in rest.items] == [
            ("app/b", "2", second.index)
        ]
        assert not rest.more
        # Any member answers a bounded-stale range from its own state, at its own revision.
        for endpoint in cluster.endpoints:
            async with Client([endpoint], tls=cluster.client_tls) as one:
                with trio.fail_after(10):
                    while True:
                        seen = await one.range("app/", prefix_end("app/"), max_staleness_s=5)
                        if seen.revision >= swapped.index:
                            break
                        await trio.sleep(0.05)
                assert [i.value for i in seen.items] == ["3", "2"] and seen.stale
        # Refused on the leader's direct path too (it once went through and answered an
        # empty page that said more followed), not only on the path of stale reads.
        leader = await cluster.wait_for_leader()
        for bad in (RangeRequest("", None, -1), RangeRequest("", None, 0, -1.0)):
            refused = await cluster.request(leader, bad)
            assert isinstance(refused, ErrorReply) and refused.code == "bad_request", refused
        deleted = await client.delete_range("app/", prefix_end("app/"))
        assert (deleted.ok, deleted.count) == (True, 2)
        everything = await client.range("", None)
        assert [item.key for item in everything.items] == ["other"]


async def test_a_lease_not_kept_alive_expires_and_takes_its_keys(cluster: Cluster) -> None:
    async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
        lease = await client.lease_grant(1)
        kept = await client.lease_grant(1)
        await client.set("session/gone", "x", lease=lease.lease)
        await client.set("session/kept", "y", lease=kept.lease)
        with trio.fail_after(20):
            while (await client.get("session/gone")).found:
                await client.lease_keepalive(kept.lease)
                await trio.sleep(0.2)
        # The kept lease's holder renewed it all along: it outlived the other.
        assert (await client.get("session/kept")).found
        with pytest.raises(DefiniteError) as refused:
            await client.lease_keepalive(lease.lease)
        assert refused.value.code == "not_found"
        with pytest.raises(DefiniteError, match="does not exist"):
            await client.set("late", "z", lease=lease.lease)
        revoked = await client.lease_revoke(kept.lease)
        assert (revoked.ok, revoked.count) == (True, 1)
        assert not (await client.get("session/kept")).found
    await same_state_everywhere(cluster)


async def test_a_new_leader_gives_every_lease_a_full_ttl(cluster: Cluster) -> None:
    """The holder renews through the old leader, which is then killed: the new one does not
    know when it last renewed, so it starts the lease afresh rather than expire it."""
    async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
        lease = await client.lease_grant(4)
        await client.set("held", "x", lease=lease.lease)
        leader = await cluster.wait_for_leader()
        await trio.sleep(2.5)  # most of the TTL gone since the grant
        await client.lease_keepalive(lease.lease)
        await cluster.kill(leader)
        survivors = [name for name in cluster.members if name != leader]
        new_leader = await cluster.wait_for_leader(survivors, timeout_s=30)
        assert new_leader != leader
        # A renewal through the new leader keeps it alive as long as it is renewed.
        with trio.fail_after(30):
            for _ in range(8):
                await client.lease_keepalive(lease.lease)
                assert (await client.get("held")).found
                await trio.sleep(1)


async def test_leases_and_their_keys_survive_a_restart_of_every_member(cluster: Cluster) -> None:
    async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
        lease = await client.lease_grant(30)
        await client.set("kept/1", "x", lease=lease.lease)
    for name in cluster.members:
        await cluster.kill(name)
    for name in cluster.members:
        await cluster.start_member(name)
    await cluster.wait_for_leader(timeout_s=30)
    async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
        with trio.fail_after(30):
            while True:  # the new leader answers once its own state is current
                try:
                    renewed = await client.lease_keepalive(lease.lease)
                    break
                except DefiniteError as exc:
                    assert exc.code == "no_leader", exc
                    await trio.sleep(0.1)
        assert renewed.ttl_s == 30
        got = await client.get("kept/1")
        assert got.found and got.lease == lease.lease
        assert (await client.lease_revoke(lease.lease)).count == 1
