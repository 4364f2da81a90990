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
