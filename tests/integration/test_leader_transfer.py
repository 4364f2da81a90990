"""Leadership transfer on real members: raftctl move-leader, its failures, and a leader
that hands over on SIGTERM so a restart costs no election timeout."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from cli.client import Client, ClientError
from tests.integration.harness import Cluster, running
from tests.integration.test_cluster import Writer, get
from tests.integration.test_raftctl import raftctl


async def term_of(cluster: Cluster, name: str) -> int:
    return (await cluster.statuses([name]))[name].term


def transfer_elections(cluster: Cluster, name: str) -> int:
    """Elections this member started because a leader asked it to."""
    lines = [json.loads(line) for line in cluster.log_text(name).splitlines() if "{" in line]
    return sum(
        1 for e in lines if e.get("event") == "election started" and e.get("reason") == "transfer"
    )


async def test_move_leader_hands_over_in_one_election_and_writes_carry_on(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path, 3)
    cluster.serve_metrics()
    async with running(cluster, nursery):
        writer = Writer(cluster)
        await writer.set("k", "1")
        leader = await cluster.wait_for_leader()
        term = await term_of(cluster, leader)
        target = next(name for name in cluster.members if name != leader)
        code, out, err = await raftctl(cluster, "--output", "json", "move-leader", target)
        assert code == 0, err
        moved = json.loads(out)
        assert (moved["leader"], moved["previous"], moved["term"]) == (target, leader, term + 1)
        assert await cluster.wait_for_leader() == target
        assert transfer_elections(cluster, target) == 1
        assert "handing leadership over" in cluster.log_text(leader)
        text = await cluster.scrape(leader)
        assert 'raftd_leader_transfers_total{outcome="completed"} 1.0' in text
        await writer.set("k", "2")
        assert (await get(cluster, target, "k")).value == "2"
        # Asking for the member that already leads is answered at once.
        code, out, _ = await raftctl(cluster, "move-leader", target)
        assert code == 0 and out == f"{target} already leads (term {term + 1})\n"
        # A name that is not a member, and a member that is down: exit 1, leader unchanged.
        code, _, err = await raftctl(cluster, "move-leader", "n9")
        assert code == 1 and "'n9' is not a member" in err
        down = next(name for name in cluster.members if name not in (leader, target))
        await cluster.kill(down)
        code, _, err = await raftctl(cluster, "move-leader", down)
        assert code == 1 and f"the transfer to {down} was aborted (timeout)" in err, err
        assert await cluster.wait_for_leader() == target
        await writer.set("k", "3")  # proposals resumed after the aborted transfer


async def test_a_leader_stopped_with_sigterm_hands_over_first(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path, 3)
    async with running(cluster, nursery):
        writer = Writer(cluster)
        await writer.set("k", "before")
        for _ in range(3):  # a rolling restart of leaders
            leader = await cluster.wait_for_leader()
            term = await term_of(cluster, leader)
            assert await cluster.stop(leader) == 0
            assert "handed the leadership to" in cluster.log_text(leader)
            successor = await cluster.wait_for_leader()
            # One election, asked for by the old leader: no election timeout was waited out.
            assert await term_of(cluster, successor) == term + 1
            assert transfer_elections(cluster, successor) >= 1
            await cluster.start_member(leader)
            await cluster.wait_all_serving(timeout_s=30)
        assert (await get(cluster, await cluster.wait_for_leader(), "k")).value == "before"


async def test_a_rolling_restart_of_every_member_under_load_loses_no_write(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path, 3)
    async with running(cluster, nursery):
        written: list[str] = []
        failed: list[str] = []
        stop = trio.Event()

        async def client(lane: int) -> None:
            async with Client(cluster.endpoints, timeout_s=10.0, tls=cluster.client_tls) as c:
                n = 0
                while not stop.is_set():
                    n += 1
                    try:
                        await c.set(f"lane{lane}", f"{n}")
                        written.append(f"lane{lane}={n}")
                    except ClientError as exc:
                        failed.append(str(exc))

        async with trio.open_nursery() as clients:
            for lane in range(4):
                clients.start_soon(client, lane)
            for name in list(cluster.members):
                assert await cluster.stop(name) == 0
                await cluster.start_member(name)
                await cluster.wait_all_serving(timeout_s=30)
            stop.set()
        assert failed == []
        assert len(written) > 50
        last = {entry.split("=")[0]: entry.split("=")[1] for entry in written}
        leader = await cluster.wait_for_leader()
        for key, value in last.items():
            assert (await get(cluster, leader, key)).value == value
