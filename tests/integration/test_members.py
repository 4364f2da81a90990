"""The cluster's members on real processes: raftctl member list and the configuration
metrics."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from tests.integration.harness import Cluster
from tests.integration.test_cluster import Writer
from tests.integration.test_raftctl import raftctl


async def test_member_list_shows_the_configuration_as_the_leader_sees_it(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path, 3)
    cluster.serve_metrics()
    await cluster.start(nursery)
    try:
        await cluster.wait_all_serving(timeout_s=30)
        await Writer(cluster).set("k", "v")
        leader = await cluster.wait_for_leader()
        follower = next(name for name in cluster.members if name != leader)
        # Asked of a follower, raftctl is redirected to the leader.
        code, out, err = await raftctl(
            cluster, "--output", "json", "member", "list",
            endpoints=cluster.members[follower].client_addr,
        )  # fmt: skip
        assert code == 0, err
        listed = json.loads(out)
        assert listed["leader"] == leader
        members = {m["name"]: m for m in listed["members"]}
        assert sorted(members) == ["n1", "n2", "n3"]
        assert [members[n]["id"] for n in ("n1", "n2", "n3")] == [1, 2, 3]
        assert all(m["role"] == "voter" for m in members.values())
        assert members[leader]["lag"] == 0 and members[leader]["last_contact_s"] == 0
        for name, member in members.items():
            assert member["client_addr"] == cluster.members[name].client_addr
            assert member["match_index"] >= 2 and member["lag"] >= 0
        code, out, _ = await raftctl(cluster, "member", "list")
        assert code == 0 and out.splitlines()[0].split() == [
            "NAME", "ID", "ROLE", "PEER", "CLIENT", "MATCH", "LAG", "CONTACT"
        ]  # fmt: skip
        assert out.splitlines()[-1].startswith(f"leader {leader}, term ")
        text = await cluster.scrape(follower)
        assert 'raftd_cluster_members{kind="voter"} 3.0' in text
        assert 'raftd_cluster_members{kind="learner"} 0.0' in text
    finally:
        await cluster.shutdown()


async def applied_at_least(cluster: Cluster, name: str, index: int) -> None:
    with trio.fail_after(30):
        while True:
            status = (await cluster.statuses([name])).get(name)
            if status is not None and status.last_applied >= index:
                return
            await trio.sleep(0.1)


async def test_a_member_joins_as_a_learner_is_promoted_and_a_removed_leader_stops(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path, 3)
    cluster.serve_metrics()
    await cluster.start(nursery)
    try:
        await cluster.wait_all_serving(timeout_s=30)
        writer = Writer(cluster)
        for n in range(40):
            await writer.set(f"k{n}", f"v{n}")
        first = ",".join(cluster.endpoints)
        n4 = await cluster.add_member("n4", nursery)
        peer = f"127.0.0.1:{n4.peer_port}"
        code, out, err = await raftctl(
            cluster, "member", "add", "n4", "--peer-addr", peer,
            "--client-addr", n4.client_addr, "--learner", endpoints=first,
        )  # fmt: skip
        assert code == 0, err
        assert out.startswith("added n4 (id 4) at index ")
        await cluster.start_member("n4")
        leader = await cluster.wait_for_leader()
        commit = (await cluster.statuses([leader]))[leader].commit_index
        await applied_at_least(cluster, "n4", commit)
        code, out, _ = await raftctl(cluster, "--output", "json", "member", "list")
        members = {m["name"]: m for m in json.loads(out)["members"]}
        assert (members["n4"]["role"], members["n4"]["id"]) == ("learner", 4)
        assert "raftd_is_learner 1.0" in await cluster.scrape("n4")
        assert members["n4"]["client_addr"] == n4.client_addr
        assert "added to the cluster" in cluster.log_text("n4")
        code, out, err = await raftctl(cluster, "member", "promote", "n4")
        assert code == 0 and out.startswith("promoted n4 (id 4)"), err
        code, out, _ = await raftctl(cluster, "--output", "json", "member", "list")
        assert {m["name"]: m["role"] for m in json.loads(out)["members"]} == {
            "n1": "voter", "n2": "voter", "n3": "voter", "n4": "voter"
        }  # fmt: skip
        # The leader removes itself: it steps down, the others go on, and it stops serving.
        leader = await cluster.wait_for_leader()
        code, out, err = await raftctl(cluster, "member", "remove", leader)
        assert code == 0 and out.startswith(f"removed {leader}"), err
        process = cluster.members[leader].process
        assert process is not None
        with trio.fail_after(20):
            assert await process.wait() == 0
        cluster.members[leader].process = None
        assert "removed from the cluster" in cluster.log_text(leader)
        await writer.set("after", "removal")
        successor = await cluster.wait_for_leader()
        assert successor != leader
        code, out, _ = await raftctl(cluster, "--output", "json", "member", "list")
        assert leader not in {m["name"] for m in json.loads(out)["members"]}
        commit = (await cluster.statuses([successor]))[successor].commit_index
        await applied_at_least(cluster, "n4", commit)
        # Started again on its old data, the removed member refuses, saying why.
        await cluster.start_member(leader)
        process = cluster.members[leader].process
        assert process is not None
        with trio.fail_after(20):
            assert await process.wait() == 2
        cluster.members[leader].process = None
        assert "was removed from the cluster (the configuration at index" in cluster.log_text(
            leader
        )
    finally:
        await cluster.shutdown()
