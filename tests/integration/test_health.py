"""What an orchestrator sees of real members: /health and /ready, and the client address
a member advertises when clients know it by another name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from cli.client import Client
from tests.integration.harness import Cluster, running
from wire.api import ErrorReply, GetRequest

DEADLINE_S = 30.0


@pytest.fixture
async def probed(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path / "members", 3)
    cluster.serve_metrics()
    n1 = cluster.members["n1"]
    # n1 listens on 127.0.0.1 and is known to clients as localhost.
    n1.extra_args += ["--advertise-client-addr", f"localhost:{n1.client_port}"]
    async with running(cluster, nursery) as started:
        yield started


async def wait_for_probe(cluster: Cluster, name: str, path: str, status: int) -> str:
    with trio.fail_after(DEADLINE_S):
        while True:
            got, body = await cluster.probe(name, path)
            if got == status:
                return body
            await trio.sleep(0.1)


async def test_members_are_ready_with_a_leader_and_stay_alive_without_one(
    probed: Cluster,
) -> None:
    cluster = probed
    for name in cluster.members:
        assert await wait_for_probe(cluster, name, "/ready", 200) == "ok\n"
        assert await cluster.probe(name, "/health") == (200, "ok\n")
    leader = await cluster.wait_for_leader()
    survivor = next(n for n in cluster.members if n != leader)
    for name in cluster.members:
        if name != survivor:
            await cluster.kill(name)
    # No quorum: not ready, and it says why; still alive (restarting it would not help).
    assert await wait_for_probe(cluster, survivor, "/ready", 503) == "no leader known\n"
    assert await cluster.probe(survivor, "/health") == (200, "ok\n")


async def test_redirects_name_the_advertised_client_address(probed: Cluster) -> None:
    cluster = probed
    n1 = cluster.members["n1"]
    async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
        assert (await client.status(n1.client_addr)).client_addr == f"localhost:{n1.client_port}"
        await client.move_leader("n1")
    assert await cluster.wait_for_leader() == "n1"
    with trio.fail_after(DEADLINE_S):
        while True:  # n2 learns who leads from n1's next message
            reply = await cluster.request("n2", GetRequest("k"))
            if isinstance(reply, ErrorReply) and reply.leader_addr:
                break
            await trio.sleep(0.05)
    assert reply.leader_addr == f"localhost:{n1.client_port}"


class NamedHosts(Cluster):
    """Members that name each other by host name: ``localhost`` for every peer in
    ``--cluster`` (their own peer address included, which they bind), and n1 listening for
    clients on ``--client-addr localhost:PORT``."""

    def peers_of(self, name: str) -> str:
        return super().peers_of(name).replace("=127.0.0.1:", "=localhost:")


async def test_members_that_know_each_other_by_host_name_elect_and_serve(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = NamedHosts(tmp_path / "members", 3)
    n1 = cluster.members["n1"]
    n1.host = "localhost"
    for name in cluster.members:
        command = cluster.command(name)
        peers = command[command.index("--cluster") + 1].split(",")
        assert peers and all("=localhost:" in peer for peer in peers), command
    assert cluster.command("n1")[cluster.command("n1").index("--client-addr") + 1] == (
        f"localhost:{n1.client_port}"
    )
    async with running(cluster, nursery):
        await cluster.wait_for_leader(timeout_s=DEADLINE_S)
        async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
            index = (await client.set("k", "by name")).index
            assert (await client.status(n1.client_addr)).client_addr == n1.client_addr
        for name in cluster.members:
            await cluster.wait_applied(name, index, timeout_s=DEADLINE_S)
        # n1 serves a client that dials it by its name.
        async with Client([n1.client_addr], tls=cluster.client_tls) as client:
            assert (await client.get("k")).value == "by name"
