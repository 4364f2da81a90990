"""Members on hosts of their own (network namespaces, tests/integration/netns.py): they
find each other by address, serve clients from another host, and ride out a link going
down, a one-way cut and a kill. Skipped, saying why, where namespaces cannot be made."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from cli.client import Client
from tests.integration.harness import running
from tests.integration.netns import NetnsCluster, unavailable

WHY_NOT = unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


@pytest.fixture
async def hosts(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[NetnsCluster]:
    cluster = NetnsCluster(tmp_path / "members", 3)
    try:
        async with running(cluster, nursery) as started:
            yield started
    finally:
        cluster.remove_hosts()


async def write(cluster: NetnsCluster, key: str, value: str) -> int:
    async with Client(cluster.endpoints, tls=cluster.client_tls, timeout_s=20) as client:
        return (await client.set(key, value)).index


async def cut_off_from_its_leader(
    cluster: NetnsCluster, follower: str, index: int, timeout_s: float = 20.0
) -> None:
    """Wait until ``follower`` gives up on its leader (no leader known, or campaigning),
    failing if it applies ``index`` meanwhile or has not given up by the deadline."""
    seen = "no status"
    with trio.move_on_after(timeout_s):
        while True:
            status = (await cluster.statuses([follower])).get(follower)
            if status is not None:
                seen = f"{status.role}, leader {status.leader}, applied {status.last_applied}"
                assert status.last_applied < index, f"{follower} applied {index}: {seen}"
                if status.leader is None or status.role != "follower":
                    return
            await trio.sleep(0.02)
    raise AssertionError(f"{follower} still follows its leader after {timeout_s} s: {seen}")


async def test_members_on_their_own_hosts_survive_a_dead_link_a_one_way_cut_and_a_kill(
    hosts: NetnsCluster,
) -> None:
    cluster = hosts
    assert all(m.client_addr.startswith(cluster.subnet) for m in cluster.members.values())
    await write(cluster, "k", "v0")

    # The leader's link goes down: the others elect a new leader and keep serving.
    old = await cluster.wait_for_leader()
    await cluster.isolate(old)
    rest = [n for n in cluster.members if n != old]
    new = await cluster.wait_for_leader(among=rest, timeout_s=30)
    assert new != old
    index = await write(cluster, "k", "v1")
    cluster.heal()
    await cluster.wait_applied(old, index)  # back on the network, it catches up

    # The leader cannot reach one follower; everything else flows: writes still commit.
    leader = await cluster.wait_for_leader()
    follower = next(n for n in cluster.members if n != leader)
    await cluster.cut_one_way(leader, follower)
    index = await write(cluster, "k", "v2")
    # The cut is real: the follower hears nothing more from the leader, so it neither
    # applies the write nor keeps believing in a leader (it times out and pre-votes).
    await cut_off_from_its_leader(cluster, follower, index)
    cluster.heal()
    await cluster.wait_applied(follower, index)

    # kill -9 and back.
    victim = await cluster.wait_for_leader()
    await cluster.kill(victim)
    index = await write(cluster, "k", "v3")
    await cluster.start_member(victim)
    await cluster.wait_applied(victim, index)
    async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
        assert (await client.get("k")).value == "v3"
