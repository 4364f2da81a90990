"""The cluster's members on real processes: raftctl member list and the configuration
metrics."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

from tests.integration.harness import ROOT, Cluster, free_port, running
from tests.integration.test_cluster import Writer, get
from tests.integration.test_raftctl import raftctl
from tests.integration.test_snapshots import converged


async def test_member_list_shows_the_configuration_as_the_leader_sees_it(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path, 3)
    cluster.serve_metrics()
    async with running(cluster, nursery):
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


async def test_a_member_joins_as_a_learner_is_promoted_and_a_removed_leader_stops(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path, 3)
    cluster.serve_metrics()
    async with running(cluster, nursery):
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
        await cluster.wait_applied("n4", commit, timeout_s=30)
        code, out, _ = await raftctl(cluster, "--output", "json", "member", "list")
        members = {m["name"]: m for m in json.loads(out)["members"]}
        assert (members["n4"]["role"], members["n4"]["id"]) == ("learner", 4)
        assert "raftd_is_learner 1.0" in await cluster.scrape("n4")
        assert members["n4"]["client_addr"] == n4.client_addr
        assert "added to the cluster" in cluster.log_text("n4")
        code, _, err = await raftctl(cluster, "move-leader", "n4")
        assert code == 1 and "'n4' is not a voter" in err, err
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
        await cluster.wait_applied("n4", commit, timeout_s=30)
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


async def grow(cluster: Cluster, nursery: trio.Nursery, name: str) -> None:
    """Add ``name`` as a learner, start it with --join, promote it once caught up."""
    member = await cluster.add_member(name, nursery)
    peer = f"127.0.0.1:{member.peer_port}"
    code, _, err = await raftctl(
        cluster, "member", "add", name, "--peer-addr", peer,
        "--client-addr", member.client_addr, "--learner",
    )  # fmt: skip
    assert code == 0, err
    await cluster.start_member(name)
    with trio.fail_after(30):
        while (code := (await raftctl(cluster, "member", "promote", name))[0]) != 0:
            await trio.sleep(0.3)


async def shrink(cluster: Cluster, name: str) -> None:
    code, _, err = await raftctl(cluster, "member", "remove", name)
    assert code == 0, err
    if cluster.members[name].process is not None:
        assert await cluster.wait_exit(name, timeout_s=20) == 0
    del cluster.members[name]


async def voters(cluster: Cluster) -> list[str]:
    code, out, _ = await raftctl(cluster, "--output", "json", "member", "list")
    assert code == 0
    return sorted(m["name"] for m in json.loads(out)["members"] if m["role"] == "voter")


async def test_grow_to_five_shrink_to_three_and_replace_a_member_whose_disk_was_wiped(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path, 3)
    async with running(cluster, nursery):
        writer = Writer(cluster)
        for n in range(30):
            await writer.set(f"k{n}", f"v{n}")
        await grow(cluster, nursery, "n4")
        await grow(cluster, nursery, "n5")
        assert await voters(cluster) == ["n1", "n2", "n3", "n4", "n5"]
        await writer.set("five", "members")
        await converged(cluster)
        for name in ("n5", "n4"):
            await shrink(cluster, name)
        assert await voters(cluster) == ["n1", "n2", "n3"]
        await writer.set("three", "again")
        # A machine replaced: n3's disk is gone; remove it, add it back as a new member.
        leader = await cluster.wait_for_leader()
        victim = next(n for n in ("n3", "n2") if n != leader)
        await cluster.stop(victim)
        shutil.rmtree(cluster.members[victim].data_dir)
        code, _, err = await raftctl(cluster, "member", "remove", victim)
        assert code == 0, err
        replacement = cluster.members.pop(victim)
        await grow(cluster, nursery, victim)
        assert await voters(cluster) == ["n1", "n2", "n3"]
        assert cluster.members[victim].peer_port != replacement.peer_port
        await writer.set("after", "replacement")
        # Restarted, the replacement replays the change that removed its predecessor: that
        # is not its own removal (it once stopped and refused to start again here).
        await cluster.stop(victim)
        await cluster.start_member(victim)
        await cluster.wait_all_serving(timeout_s=30)
        hashes = await converged(cluster)  # it has applied every change again
        assert "removed from the cluster" not in cluster.log_text(victim)
        assert sorted(hashes) == ["n1", "n2", "n3"]
        leader = await cluster.wait_for_leader()
        assert (await get(cluster, leader, "k7")).value == "v7"


async def test_a_joining_member_says_why_it_cannot_wait_and_stops_cleanly_while_waiting(
    tmp_path: Path,
) -> None:
    peer, client = free_port(), free_port()
    args = [sys.executable, "-m", "raftd", "run", "--id", "n4", "--join",
            "--cluster", f"n1=127.0.0.1:{free_port()},n4=127.0.0.1:{peer}",
            "--client-addr", f"127.0.0.1:{client}", "--data-dir"]  # fmt: skip
    # Its peer port taken: exit 1, naming it.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", peer))
        taken.listen()
        busy = await trio.run_process(
            [*args, str(tmp_path / "busy")], capture_stderr=True, check=False, cwd=ROOT
        )
    assert busy.returncode == 1
    assert f"cannot listen for peers on 127.0.0.1:{peer}" in busy.stderr.decode()
    # Waiting to be added, SIGTERM stops it cleanly with nothing written.
    waiting = await trio.lowlevel.open_process(
        [*args, str(tmp_path / "wait")], stderr=subprocess.PIPE, cwd=ROOT
    )
    with trio.fail_after(20):
        while True:
            try:
                with socket.create_connection(("127.0.0.1", peer), timeout=1):
                    break
            except OSError:
                await trio.sleep(0.1)
        waiting.send_signal(signal.SIGTERM)
        assert await waiting.wait() == 0
    assert not (tmp_path / "wait" / "member.json").exists()
